package bmc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in, shown string
		err       error
		msg       string
	}{
		{"ipmi://admin:secret@10.0.0.5", "ipmi://admin:xxxxx@10.0.0.5", nil, ""},
		{"IPMI://admin:secret@10.0.0.5:6230?boot=legacy", "ipmi://admin:xxxxx@10.0.0.5:6230?boot=legacy", nil, ""},
		{"redfish://root:secret@bmc/redfish/v1/Systems/1", "redfish://root:xxxxx@bmc/redfish/v1/Systems/1", nil, ""},
		{"idrac://admin:secret@10.0.0.5", "", ErrUnsupported, `unsupported BMC type "idrac" in idrac://admin:xxxxx@10.0.0.5 (supported: ipmi, redfish, redfish+http)`},
		{"redfish+https://10.0.0.5", "", ErrUnsupported, `"redfish+https"`},
		{"amt://10.0.0.5", "", ErrUnsupported, `"amt"`},
		{"/run/vm1.qmp", "", ErrInvalidAddress, "no type; want ipmi://user:password@host or redfish://user:password@host"},
		{"ipmi://%zz/x", "", ErrInvalidAddress, "invalid URL escape"},
		{"ipmi://admin:se%zzcret@host", "", ErrInvalidAddress, "invalid"},
		{"qmp://admin:secret@host/x.qmp", "", ErrUnsupported, `"qmp" in qmp://admin:xxxxx@host/x.qmp`},
	} {
		a, err := ParseAddress(tc.in)
		if !errors.Is(err, tc.err) || (tc.msg != "" && !strings.Contains(fmt.Sprint(err), tc.msg)) {
			t.Errorf("%q: error %v, want %v containing %q", tc.in, err, tc.err, tc.msg)
			continue
		}
		if err == nil && (a.String() != tc.shown || a.Full() != strings.ReplaceAll(tc.shown, "xxxxx", "secret")) {
			t.Errorf("%q: shown as %q, full %q; want %q", tc.in, a, a.Full(), tc.shown)
		}
		if strings.Contains(fmt.Sprint(err), "cret") {
			t.Errorf("%q: error shows the password: %v", tc.in, err)
		}
	}
	if _, err := Open("idrac://10.0.0.5"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Open(idrac): %v, want ErrUnsupported", err)
	}
	if got := Redact("redfish://root:pw@bmc"); got != "redfish://root:xxxxx@bmc" {
		t.Errorf("Redact = %q", got)
	}
}

// TestOpenRefusesQMP: the QEMU lab's QMP driver is test code
// (test/labkit/qmp); a qmp:// address is refused as unsupported, with a
// message that says so and names the supported types.
func TestOpenRefusesQMP(t *testing.T) {
	for _, addr := range []string{"qmp:///x", "qmp:///run/anvil/vm1.qmp", "QMP:/run/vm1.qmp"} {
		d, err := Open(addr)
		if d != nil || !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Open(%q) = %v, %v; want ErrUnsupported", addr, d, err)
		}
		for _, want := range []string{"QEMU lab", "not a production driver", "ipmi://", "redfish://"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%q): %q lacks %q", addr, err, want)
			}
		}
	}
}
