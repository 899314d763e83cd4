package bmc

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRedfishAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		err  string
	}{
		{in: "redfish://root:calvin@10.0.0.5", want: Address{Scheme: "redfish", Host: "10.0.0.5", User: "root", Password: "calvin", httpScheme: "https"}},
		{in: "redfish+http://root:calvin@[fd00::1]:8000/redfish/v1/Systems/System.Embedded.1?boot=legacy", want: Address{Scheme: "redfish+http", Host: "fd00::1", Port: 8000,
			User: "root", Password: "calvin", Path: "/redfish/v1/Systems/System.Embedded.1", LegacyBoot: true, httpScheme: "http"}},
		{in: "redfish://root:calvin@bmc?insecure=true", want: Address{Scheme: "redfish", Host: "bmc", User: "root", Password: "calvin", Insecure: true, httpScheme: "https"}},
		{in: "redfish://10.0.0.5", err: "needs a user"},
		{in: "redfish://root:calvin@10.0.0.5/redfish/v1/Managers/1", err: "must be a system"},
		{in: "redfish://root:calvin@10.0.0.5/redfish/v1/Systems/1/../2", err: "must be a system"},
		{in: "redfish://root:calvin@10.0.0.5?insecure=yes", err: "insecure="},
		{in: "redfish://root:calvin@10.0.0.5?x=1", err: "unknown parameter"},
	} {
		a, err := ParseAddress(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalidAddress) || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "calvin") {
				t.Errorf("%q: %v, want an invalid-address error about %q without the password", tc.in, err, tc.err)
			}
			continue
		}
		a.raw = nil
		if err != nil || a != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, a, err, tc.want)
		}
	}
}
