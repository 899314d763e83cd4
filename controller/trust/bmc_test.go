package trust

import (
	"net/url"
	"strings"
	"testing"
)

func TestDecideBMC(t *testing.T) {
	ok := BMCReport{IP: "192.168.77.211", User: "anvil", Password: "Secret1234abcdEF"}
	with := func(f func(*BMCReport)) BMCReport { r := ok; f(&r); return r }
	for _, tc := range []struct {
		name   string
		r      BMCReport
		p      BMCPolicy
		store  bool
		reason string
	}{
		{"trusted session", ok, BMCInBand, true, "enrolled in-band"},
		{"policy off", ok, BMCOff, false, "policy is off"},
		{"held session", with(func(r *BMCReport) { r.Held = true }), BMCInBand, false, "awaits approval"},
		{"operator's BMC", with(func(r *BMCReport) { r.OperatorSet = true }), BMCInBand, false, "operator set"},
		{"no password", with(func(r *BMCReport) { r.Password = "" }), BMCInBand, false, "incomplete"},
		{"no address", with(func(r *BMCReport) { r.IP = "" }), BMCInBand, false, "no usable IPv4"},
		{"unset address", with(func(r *BMCReport) { r.IP = "0.0.0.0" }), BMCInBand, false, "not a unicast"},
		{"loopback", with(func(r *BMCReport) { r.IP = "127.0.0.1" }), BMCInBand, false, "not a unicast"},
		{"broadcast", with(func(r *BMCReport) { r.IP = "255.255.255.255" }), BMCInBand, false, "not a unicast"},
		{"IPv6", with(func(r *BMCReport) { r.IP = "fe80::1" }), BMCInBand, false, "no usable IPv4"},
	} {
		v := DecideBMC(tc.r, tc.p)
		if v.Store != tc.store || !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s: %+v, want store %v and a reason with %q", tc.name, v, tc.store, tc.reason)
		}
		if v.Store != (v.Address != "") {
			t.Errorf("%s: store %v with address %q", tc.name, v.Store, v.Address)
		}
	}
	if v := DecideBMC(ok, BMCInBand); v.Address != "ipmi://anvil:Secret1234abcdEF@192.168.77.211" {
		t.Errorf("address %q", v.Address)
	}
	// Characters a URL reserves are escaped, and come back whole.
	v := DecideBMC(BMCReport{IP: "10.0.0.5", User: "a:b", Password: "pa@ss/w:rd%"}, BMCInBand)
	u, err := url.Parse(v.Address)
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); u.User.Username() != "a:b" || pw != "pa@ss/w:rd%" || u.Host != "10.0.0.5" {
		t.Errorf("address %q parses as %v", v.Address, u)
	}
}

func TestAskBMCEnrollment(t *testing.T) {
	for _, tc := range []struct {
		p                     BMCPolicy
		known, bmcSet, inBand bool
		want                  bool
	}{
		{BMCInBand, false, false, false, true}, // a new machine
		{BMCInBand, true, false, false, true},  // known, no BMC yet
		{BMCInBand, true, true, true, true},    // enrolled before: rotate
		{BMCInBand, true, true, false, false},  // the operator's BMC
		{BMCOff, false, false, false, false},
		{BMCOff, true, true, true, false},
	} {
		if got := AskBMCEnrollment(tc.p, tc.known, tc.bmcSet, tc.inBand); got != tc.want {
			t.Errorf("%+v: %v", tc, got)
		}
	}
	if _, err := ParseBMCPolicy("sometimes"); err == nil {
		t.Error("bad policy accepted")
	}
	if p, err := ParseBMCPolicy(" In-Band "); err != nil || p != BMCInBand {
		t.Errorf("in-band: %v %v", p, err)
	}
}
