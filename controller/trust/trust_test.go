package trust

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	type want struct {
		accept, trusted bool
		reason          string
	}
	tests := []struct {
		name string
		r    Registration
		p    Policy
		want want
	}{
		{"new machine, auto", Registration{}, PolicyAuto, want{true, true, "enrolled"}},
		{"new machine, approve", Registration{}, PolicyApprove, want{true, false, "approve"}},
		{"new host agent, approve", Registration{Kind: SharedToken}, PolicyApprove, want{true, true, "host agent"}},
		{"live session, unexpected: refused", Registration{Known: true, Live: true}, PolicyAuto, want{false, false, "live"}},
		{"live session, unexpected, shared token: refused", Registration{Kind: SharedToken, Known: true, Live: true}, PolicyAuto, want{false, false, "live"}},
		{"live session, expected boot: refused (a free whose machine never rebooted)", Registration{Known: true, Live: true, Expected: true, ExpectWhy: "reclaim"}, PolicyAuto, want{false, false, "live"}},
		{"held live session, expected boot", Registration{Known: true, Live: true, Held: true, Expected: true, ExpectWhy: "power"}, PolicyApprove, want{true, true, "expected"}},
		{"held live session, unexpected: still held", Registration{Known: true, Live: true, Held: true}, PolicyAuto, want{true, false, "approve"}},
		{"dead session, expected reboot", Registration{Known: true, Expected: true, ExpectWhy: "agent reported REBOOTING"}, PolicyApprove, want{true, true, "REBOOTING"}},
		{"shared token, dead session, secrets pending: held", Registration{Kind: SharedToken, Known: true, SecretsPending: true}, PolicyAuto, want{true, false, "not delivered"}},
		{"dead session, expected power cycle, secrets pending", Registration{Known: true, Expected: true, ExpectWhy: "power", SecretsPending: true}, PolicyAuto, want{true, true, "expected"}},
		{"dead session, unexpected, auto", Registration{Known: true}, PolicyAuto, want{true, true, "previous session ended"}},
		{"dead session, unexpected, approve", Registration{Known: true}, PolicyApprove, want{true, false, "approve"}},
		{"dead session, unexpected, secrets pending, auto", Registration{Known: true, SecretsPending: true}, PolicyAuto, want{true, false, "not delivered"}},
		{"dead session, unexpected, already held, auto", Registration{Known: true, Held: true}, PolicyAuto, want{true, false, "approve"}},
		{"own credential", Registration{Kind: Credential, Known: true, Live: true}, PolicyApprove, want{true, true, "credential"}},
		{"own credential while held", Registration{Kind: Credential, Known: true, Live: true, Held: true}, PolicyAuto, want{true, false, "awaits approval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Decide(tt.r, tt.p)
			if v.Accept != tt.want.accept || v.Trusted != tt.want.trusted || !strings.Contains(v.Reason, tt.want.reason) {
				t.Errorf("Decide(%+v, %s) = %+v, want accept=%v trusted=%v reason ~ %q", tt.r, tt.p, v, tt.want.accept, tt.want.trusted, tt.want.reason)
			}
			if v.Trusted && !v.Accept {
				t.Errorf("trusted but refused: %+v", v)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"auto": PolicyAuto, " Approve ": PolicyApprove} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("yes"); err == nil {
		t.Error("ParsePolicy(yes) succeeded")
	}
}
