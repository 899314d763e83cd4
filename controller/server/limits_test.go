package server

import "testing"

func TestClientIPNamesOneClientOneWay(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5:4242":           "10.0.0.5",
		"[fe80::1%br0]:80":        "fe80::1",
		"[fe80::1]:7443":          "fe80::1",
		"[::ffff:10.0.0.5]:80":    "10.0.0.5",
		"[2001:DB8::1]:1":         "2001:db8::1",
		"not an address":          "not an address",
		"192.0.2.1":               "192.0.2.1",
		"[2001:db8::1%eth0]:8080": "2001:db8::1",
	} {
		if got := ClientIP(in); got != want {
			t.Errorf("ClientIP(%q) = %q, want %q", in, got, want)
		}
	}
}
