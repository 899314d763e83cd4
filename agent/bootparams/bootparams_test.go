package bootparams

import (
	"reflect"
	"testing"
	"time"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a b\tc\n", []string{"a", "b", "c"}},
		{`x="a b" y`, []string{"x=a b", "y"}},
		{`"x=a b" y`, []string{"x=a b", "y"}},
		{`x="" y`, []string{"x=", "y"}},
	} {
		if got := Split(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Params
		wantErr bool
	}{
		{"console=ttyS0 anvil.controller=10.0.2.2:7443 anvil.token=abc anvil.ca_fp=sha256:00ff quiet",
			Params{Controller: "10.0.2.2:7443", BootToken: "abc", CAFingerprint: "sha256:00ff", Console: []string{"console=ttyS0"}}, false},
		{"console=tty0 console= console=ttyS1,115200n8", Params{Console: []string{"console=tty0", "console=ttyS1,115200n8"}}, false},
		{"anvil.token=a anvil.token=b", Params{BootToken: "b"}, false},
		{"anvil.debug", Params{Debug: true}, false},
		{"anvil.debug=0", Params{}, false},
		{"anvil.debug=yes", Params{Debug: true}, false},
		{"anvil.contoller=x", Params{}, true},
		// Several replicas, or one DNS name; each address checked.
		{"anvil.controller=10.0.2.2:7443,10.0.2.3:7443,[fd00::4]:7443",
			Params{Controller: "10.0.2.2:7443,10.0.2.3:7443,[fd00::4]:7443"}, false},
		{"anvil.controller=anvil.example.net:7443", Params{Controller: "anvil.example.net:7443"}, false},
		{"anvil.controller=10.0.2.2:7443,10.0.2.2:7443", Params{}, true},
		{"anvil.controller=10.0.2.2:7443,", Params{}, true},
		{"anvil.controller=10.0.2.2", Params{}, true},
		{"anvil.controller=10.0.2.2:7443;10.0.2.3:7443", Params{}, true},
		{"anvil.controller=", Params{}, true},
		{"root=/dev/sda1 ro", Params{}, false},
		{"anvil.lldp_wait=1500ms", Params{LLDPWait: durationPtr(1500 * time.Millisecond)}, false},
		{"anvil.lldp_wait=0", Params{LLDPWait: durationPtr(0)}, false},
		{"anvil.lldp_wait=5", Params{}, true},
		{"anvil.lldp_wait=-1s", Params{}, true},
		{"anvil.lldp_wait=", Params{}, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("Parse(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func durationPtr(d time.Duration) *time.Duration { return &d }

func FuzzParse(f *testing.F) {
	f.Add(`anvil.controller=1.2.3.4:7443 anvil.token="a b" quiet`)
	f.Add(`"`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = Parse(s) // must not panic
		for _, p := range Split(s) {
			if p == "" && len(s) > 0 && !containsQuote(s) {
				t.Fatalf("empty parameter from %q", s)
			}
		}
	})
}

func containsQuote(s string) bool {
	for _, r := range s {
		if r == '"' {
			return true
		}
	}
	return false
}
