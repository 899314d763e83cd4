package trust

import (
	"net/url"
	"strings"
	"testing"
)

func TestDecideBMC(t *testing.T) {
	ok := BMCReport{Found: true, FreshBoot: true, IP: "192.168.77.211"}
	with := func(f func(*BMCReport)) BMCReport { r := ok; f(&r); return r }
	for _, tc := range []struct {
		name         string
		r            BMCReport
		p            BMCPolicy
		enroll, tell bool
		reason       string
	}{
		{"a trusted fresh boot", ok, BMCInBand, true, false, "enrolled in-band"},
		{"no BMC found", with(func(r *BMCReport) { r.Found = false }), BMCInBand, false, false, "no in-band BMC"},
		{"policy off", ok, BMCOff, false, false, "policy is off"},
		{"operator's BMC", with(func(r *BMCReport) { r.OperatorSet = true }), BMCInBand, false, false, "operator set"},
		{"same boot again", with(func(r *BMCReport) { r.FreshBoot = false }), BMCInBand, false, false, "not again"},
		{"held session", with(func(r *BMCReport) { r.Held = true }), BMCInBand, false, true, "awaits approval"},
		{"operator's BMC of a held session", with(func(r *BMCReport) { r.Held, r.OperatorSet = true, true }), BMCInBand, false, false, "operator set"},
		{"no address", with(func(r *BMCReport) { r.IP = "" }), BMCInBand, false, true, "no usable IPv4"},
		{"unset address", with(func(r *BMCReport) { r.IP = "0.0.0.0" }), BMCInBand, false, true, "not a routable"},
		{"loopback", with(func(r *BMCReport) { r.IP = "127.0.0.1" }), BMCInBand, false, true, "not a routable"},
		{"link-local", with(func(r *BMCReport) { r.IP = "169.254.0.7" }), BMCInBand, false, true, "not a routable"},
		{"broadcast", with(func(r *BMCReport) { r.IP = "255.255.255.255" }), BMCInBand, false, true, "not a routable"},
		{"IPv6", with(func(r *BMCReport) { r.IP = "fe80::1" }), BMCInBand, false, true, "no usable IPv4"},
	} {
		v := DecideBMC(tc.r, tc.p)
		if v.Enroll != tc.enroll || v.Tell != tc.tell || !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s: %+v, want enroll %v, tell %v and a reason with %q", tc.name, v, tc.enroll, tc.tell, tc.reason)
		}
	}
}

func TestInBandAddress(t *testing.T) {
	if a := InBandAddress("anvil", "Secret1234abcdEF", "192.168.77.211"); a != "ipmi://anvil:Secret1234abcdEF@192.168.77.211" {
		t.Errorf("address %q", a)
	}
	// Characters a URL reserves are escaped, and come back whole.
	u, err := url.Parse(InBandAddress("a:b", "pa@ss/w:rd%", "10.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); u.User.Username() != "a:b" || pw != "pa@ss/w:rd%" || u.Host != "10.0.0.5" {
		t.Errorf("parses as %v", u)
	}
}

func TestParseBMCPolicy(t *testing.T) {
	if _, err := ParseBMCPolicy("sometimes"); err == nil {
		t.Error("bad policy accepted")
	}
	if p, err := ParseBMCPolicy(" In-Band "); err != nil || p != BMCInBand {
		t.Errorf("in-band: %v %v", p, err)
	}
}
