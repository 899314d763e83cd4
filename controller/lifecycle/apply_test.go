package lifecycle

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Status must stay comparable: the store's test suite compares it with ==.
var _ = Status{} == Status{}

// at is minute m of the test day.
func at(m int) time.Time {
	return time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC).Add(time.Duration(m) * time.Minute)
}

func ev(typ anvilv1.EventType, seq int64, m int, msg string) *anvilv1.Event {
	return &anvilv1.Event{Seq: seq, Type: typ, Time: timestamppb.New(at(m)), Message: msg}
}

// history numbers the events 1, 2, … one minute apart.
func history(types ...anvilv1.EventType) []*anvilv1.Event {
	evs := make([]*anvilv1.Event, len(types))
	for i, typ := range types {
		evs[i] = ev(typ, int64(i+1), i, "")
	}
	return evs
}

// diffStatus compares two statuses, times by instant.
func diffStatus(want, got Status) string {
	w, g := want, got
	w.LastEventTime, g.LastEventTime = time.Time{}, time.Time{}
	w.ReclaimSince, g.ReclaimSince = time.Time{}, time.Time{}
	if w != g || !want.LastEventTime.Equal(got.LastEventTime) || !want.ReclaimSince.Equal(got.ReclaimSince) {
		return fmt.Sprintf("\n got %+v\nwant %+v", got, want)
	}
	return ""
}

func TestApplyTransitions(t *testing.T) {
	since := at(-30)
	reclaiming := func(st anvilv1.MachineState) Status {
		return Status{State: st, Reclaiming: true, ReclaimSince: since}
	}
	tests := []struct {
		name string
		from Status
		typ  anvilv1.EventType
		msg  string
		want Status
	}{
		// PXE_BOOTING
		{"pxe from nothing", Status{}, evPXEBooting, "",
			Status{State: stPXEBooting, CycleOpen: true}},
		{"pxe after a completed cycle counts nothing", Status{State: stReady}, evPXEBooting, "",
			Status{State: stPXEBooting, CycleOpen: true}},
		{"pxe of a provisioned machine keeps it provisioned (sent to its disk)", Status{State: stProvisioned, Allocated: true, Installed: true}, evPXEBooting, "",
			Status{State: stProvisioned, Allocated: true, Installed: true, CycleOpen: true}},
		{"pxe of a provisioned machine again before it phoned home counts", Status{State: stProvisioned, Allocated: true, Installed: true, CycleOpen: true, IncompleteCycles: 1}, evPXEBooting, "",
			Status{State: stProvisioned, Allocated: true, Installed: true, CycleOpen: true, IncompleteCycles: 2}},
		{"pxe of a booting machine (kexec failed, firmware reboot)", Status{State: stBooting, Allocated: true, Installed: true, CycleOpen: true}, evPXEBooting, "",
			Status{State: stPXEBooting, Allocated: true, Installed: true, CycleOpen: true, IncompleteCycles: 1}},
		{"pxe while the cycle is open counts it", Status{State: stRegistering, CycleOpen: true, IncompleteCycles: 1}, evPXEBooting, "",
			Status{State: stPXEBooting, CycleOpen: true, IncompleteCycles: 2}},
		{"pxe of an announced reboot counts nothing", Status{State: stAllocated, Allocated: true, CycleOpen: true, RebootPlanned: true}, evPXEBooting, "",
			Status{State: stPXEBooting, Allocated: true, CycleOpen: true}},
		{"pxe out of FAILED clears the reason", Status{State: stFailed, FailureReason: "disk", CycleOpen: true}, evPXEBooting, "",
			Status{State: stPXEBooting, CycleOpen: true, IncompleteCycles: 1}},
		// REGISTERING
		{"registering after pxe is the same cycle", Status{State: stPXEBooting, CycleOpen: true}, evRegistering, "",
			Status{State: stRegistering, CycleOpen: true}},
		{"registering without pxe starts a cycle", Status{State: stReady}, evRegistering, "",
			Status{State: stRegistering, CycleOpen: true}},
		{"registering without pxe while the cycle is open counts it", Status{State: stRegistering, CycleOpen: true, IncompleteCycles: 1}, evRegistering, "",
			Status{State: stRegistering, CycleOpen: true, IncompleteCycles: 2}},
		{"registering out of FAILED clears the reason", Status{State: stFailed, FailureReason: "install failed", Allocated: true}, evRegistering, "",
			Status{State: stRegistering, Allocated: true, CycleOpen: true}},
		// WAITING
		{"waiting unallocated is ready and completes the cycle", Status{State: stRegistering, CycleOpen: true, IncompleteCycles: 2}, evWaiting, "",
			Status{State: stReady}},
		{"waiting allocated is allocated, cycle still open", Status{State: stRegistering, Allocated: true, CycleOpen: true}, evWaiting, "",
			Status{State: stAllocated, Allocated: true, CycleOpen: true}},
		{"waiting after a reclaim awaits the erase", Status{State: stRegistering, Reclaiming: true, ReclaimSince: since, CycleOpen: true}, evWaiting, "",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, CycleOpen: true}},
		{"waiting again while ready", Status{State: stReady}, evWaiting, "",
			Status{State: stReady}},
		{"waiting shows the announced reboot did not happen", Status{State: stAllocated, Allocated: true, CycleOpen: true, RebootPlanned: true}, evWaiting, "",
			Status{State: stAllocated, Allocated: true, CycleOpen: true}},
		// ALLOCATED, REINSTALL
		{"allocated", Status{State: stReady}, evAllocated, "",
			Status{State: stAllocated, Allocated: true}},
		{"reinstall of a provisioned machine", Status{State: stProvisioned, Allocated: true, Installed: true}, evReinstall, "",
			Status{State: stAllocated, Allocated: true}},
		{"reinstall of a failed install", Status{State: stFailed, FailureReason: "checksum", Allocated: true, CycleOpen: true}, evReinstall, "",
			Status{State: stAllocated, Allocated: true, CycleOpen: true}},
		// WIPING, WIPED
		{"wiping when ready", Status{State: stReady}, evWiping, "",
			Status{State: stWiping}},
		{"wiping a reclaimed machine", Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, RebootPlanned: true}, evWiping, "",
			reclaiming(stWiping)},
		{"wiping an allocated machine before its install", Status{State: stAllocated, Allocated: true}, evWiping, "",
			Status{State: stWiping, Allocated: true}},
		{"wiped after reclaim is ready and ends the reclaim", Status{State: stWiping, Reclaiming: true, ReclaimSince: since, FailedReclaim: true, CycleOpen: true, IncompleteCycles: 1}, evWiped, "",
			Status{State: stReady}},
		{"wiped allocated goes back to allocated", Status{State: stWiping, Allocated: true, CycleOpen: true}, evWiped, "",
			Status{State: stAllocated, Allocated: true, CycleOpen: true}},
		{"wiped without a wiping event", reclaiming(stReclaim), evWiped, "",
			Status{State: stReady}},
		// INSTALLING, BOOTING
		{"installing", Status{State: stAllocated, Allocated: true}, evInstalling, "",
			Status{State: stInstalling, Allocated: true}},
		{"installing after the agent re-registered mid-install", Status{State: stRegistering, Allocated: true, CycleOpen: true}, evInstalling, "",
			Status{State: stInstalling, Allocated: true, CycleOpen: true}},
		{"booting", Status{State: stInstalling, Allocated: true}, evBooting, "",
			Status{State: stBooting, Allocated: true, Installed: true}},
		{"booting after the agent re-registered mid-install", Status{State: stAllocated, Allocated: true}, evBooting, "",
			Status{State: stBooting, Allocated: true, Installed: true}},
		// PHONED_HOME
		{"phoned home is provisioned and completes the cycle", Status{State: stBooting, Allocated: true, Installed: true, CycleOpen: true, IncompleteCycles: 2}, evPhonedHome, "",
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"phoned home again", Status{State: stProvisioned, Allocated: true, Installed: true}, evPhonedHome, "",
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"phoned home after a reboot into the installed OS", Status{State: stPXEBooting, Allocated: true, Installed: true, CycleOpen: true}, evPhonedHome, "",
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"phoned home with the BOOTING report lost", Status{State: stInstalling, Allocated: true}, evPhonedHome, "",
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"phoned home after reclaim is a failed reclaim", Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, RebootPlanned: true}, evPhonedHome, "",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, RebootPlanned: true, FailedReclaim: true}},
		{"phoned home after reclaim and a reboot", Status{State: stPXEBooting, Reclaiming: true, ReclaimSince: since, CycleOpen: true}, evPhonedHome, "",
			Status{State: stPXEBooting, Reclaiming: true, ReclaimSince: since, CycleOpen: true, FailedReclaim: true}},
		// RECLAIM
		{"reclaim", Status{State: stProvisioned, Allocated: true, Installed: true}, evReclaim, "",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(100), RebootPlanned: true}},
		{"reclaim of a failed machine", Status{State: stFailed, FailureReason: "wipe", CycleOpen: true, IncompleteCycles: 1}, evReclaim, "",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(100), RebootPlanned: true, CycleOpen: true, IncompleteCycles: 1}},
		{"reclaim restarts a failed reclaim", Status{State: stFailed, FailureReason: "wipe", Reclaiming: true, ReclaimSince: since, FailedReclaim: true}, evReclaim, "",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(100), RebootPlanned: true}},
		// FAILED
		{"failed keeps the allocation", Status{State: stInstalling, Allocated: true}, evFailed, "install: checksum mismatch",
			Status{State: stFailed, FailureReason: "install: checksum mismatch", Allocated: true}},
		{"failed during a reclaim keeps the reclaim", Status{State: stWiping, Reclaiming: true, ReclaimSince: since, RebootPlanned: true}, evFailed, "erase /dev/sda: EIO",
			Status{State: stFailed, FailureReason: "erase /dev/sda: EIO", Reclaiming: true, ReclaimSince: since}},
		{"failed again takes the new reason", Status{State: stFailed, FailureReason: "first"}, evFailed, "second",
			Status{State: stFailed, FailureReason: "second"}},
		// REBOOTING, POWERING_OFF
		{"rebooting is informational", Status{State: stReady}, evRebooting, "",
			Status{State: stReady, RebootPlanned: true}},
		{"powering off is informational", Status{State: stProvisioned, Allocated: true, Installed: true}, evPoweringOff, "",
			Status{State: stProvisioned, Allocated: true, Installed: true, RebootPlanned: true}},
		{"rebooting a failed machine keeps the reason", Status{State: stFailed, FailureReason: "boom"}, evRebooting, "",
			Status{State: stFailed, FailureReason: "boom", RebootPlanned: true}},
		// POWER
		{"power through the BMC keeps the state and announces the boot", Status{State: stInstalling, Allocated: true, CycleOpen: true}, evPower, "power reset by operator: now on",
			Status{State: stInstalling, Allocated: true, CycleOpen: true, RebootPlanned: true}},
		{"power of a failed machine keeps the reason", Status{State: stFailed, FailureReason: "boom"}, evPower, "power off by operator: now off",
			Status{State: stFailed, FailureReason: "boom", RebootPlanned: true}},
		// HELD, APPROVED, SECURITY
		{"held registration of a ready machine awaits approval and starts no cycle (anyone can make one)", Status{State: stReady}, evHeld, "",
			Status{State: stApproval}},
		{"held registration of an allocated machine keeps the allocation and counts no cycle", Status{State: stInstalling, Allocated: true, CycleOpen: true}, evHeld, "",
			Status{State: stApproval, Allocated: true, CycleOpen: true}},
		{"approval of a new machine: registered, its work or WAITING follows", Status{State: stApproval, CycleOpen: true}, evApproved, "",
			Status{State: stRegistering, CycleOpen: true}},
		{"approval of an allocated machine keeps the allocation", Status{State: stApproval, Allocated: true, CycleOpen: true}, evApproved, "",
			Status{State: stRegistering, Allocated: true, CycleOpen: true}},
		{"approval of a reclaiming machine keeps the reclaim", Status{State: stApproval, Reclaiming: true, ReclaimSince: since, CycleOpen: true}, evApproved, "",
			Status{State: stRegistering, Reclaiming: true, ReclaimSince: since, CycleOpen: true}},
		{"approval when nothing awaits it changes nothing", Status{State: stReady}, evApproved, "",
			Status{State: stReady, Unexpected: 1, LastUnexpected: "APPROVED in READY, not allocated (event 7)"}},
		{"a security event changes no state", Status{State: stReady, Allocated: false}, evSecurity, "refused",
			Status{State: stReady}},
		{"a security event does not end a boot cycle or announce one", Status{State: stInstalling, Allocated: true, CycleOpen: true}, evSecurity, "refused",
			Status{State: stInstalling, Allocated: true, CycleOpen: true}},
		{"a BMC event changes no state", Status{State: stReady}, evBMC, "enrolled",
			Status{State: stReady}},
		{"a BMC event does not end a boot cycle or announce one", Status{State: stBooting, Allocated: true, CycleOpen: true}, evBMC, "unreachable",
			Status{State: stBooting, Allocated: true, CycleOpen: true}},
		{"a BMC event changes no state and announces no boot", Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, CycleOpen: true}, evBMC, "power-cycled",
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, CycleOpen: true}},
	}
	covered := map[anvilv1.EventType]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ev(tt.typ, 7, 100, tt.msg)
			got := Apply(tt.from, e, DefaultConfig())
			want := tt.want
			want.LastEvent, want.LastEventTime = tt.typ, at(100)
			if d := diffStatus(want, got); d != "" {
				t.Error(d)
			}
		})
		covered[tt.typ] = true
	}
	for v := range anvilv1.EventType_name {
		if typ := anvilv1.EventType(v); typ != anvilv1.EventType_EVENT_TYPE_UNSPECIFIED && !covered[typ] {
			t.Errorf("no transition test for %s", typ)
		}
	}
}

func TestApplyUnexpected(t *testing.T) {
	tests := []struct {
		name string
		from Status
		typ  anvilv1.EventType
		// want is the applied result of an operator event; zero means the
		// event must leave the state as it was.
		want     Status
		wantDesc string
	}{
		{name: "phoned home while ready and unallocated", from: Status{State: stReady}, typ: evPhonedHome,
			wantDesc: "PHONED_HOME in READY, not allocated (event 9)"},
		{name: "phoned home of an allocation not installed yet (old OS after reinstall)", from: Status{State: stAllocated, Allocated: true}, typ: evPhonedHome,
			wantDesc: "PHONED_HOME in ALLOCATED, allocated (event 9)"},
		{name: "installing when not allocated", from: Status{State: stReady}, typ: evInstalling,
			wantDesc: "INSTALLING in READY, not allocated (event 9)"},
		{name: "installing after reclaim", from: Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(1)}, typ: evInstalling,
			wantDesc: "INSTALLING in RECLAIM, not allocated (event 9)"},
		{name: "installing a provisioned machine without reinstall", from: Status{State: stProvisioned, Allocated: true, Installed: true}, typ: evInstalling,
			wantDesc: "INSTALLING in PROVISIONED, allocated (event 9)"},
		{name: "booting when not allocated", from: Status{State: stWiping}, typ: evBooting,
			wantDesc: "BOOTING in WIPING, not allocated (event 9)"},
		{name: "waiting before registering", from: Status{State: stPXEBooting, CycleOpen: true}, typ: evWaiting,
			wantDesc: "WAITING in PXE_BOOTING, not allocated (event 9)"},
		{name: "waiting must not turn a failure into ready", from: Status{State: stFailed, FailureReason: "erase failed"}, typ: evWaiting,
			wantDesc: "WAITING in FAILED, not allocated (event 9)"},
		{name: "waiting must not skip the end of a wipe", from: Status{State: stWiping, Reclaiming: true, ReclaimSince: at(1)}, typ: evWaiting,
			wantDesc: "WAITING in WIPING, not allocated (event 9)"},
		{name: "wiping during an install", from: Status{State: stInstalling, Allocated: true}, typ: evWiping,
			wantDesc: "WIPING in INSTALLING, allocated (event 9)"},
		{name: "wiping a failed machine without a reclaim", from: Status{State: stFailed, FailureReason: "x"}, typ: evWiping,
			wantDesc: "WIPING in FAILED, not allocated (event 9)"},
		{name: "wiped while provisioned", from: Status{State: stProvisioned, Allocated: true, Installed: true}, typ: evWiped,
			wantDesc: "WIPED in PROVISIONED, allocated (event 9)"},
		{name: "unspecified type", from: Status{State: stReady}, typ: anvilv1.EventType_EVENT_TYPE_UNSPECIFIED,
			wantDesc: "UNSPECIFIED in READY, not allocated (event 9)"},
		{name: "unknown type", from: Status{State: stBooting, Allocated: true, Installed: true}, typ: anvilv1.EventType(99),
			wantDesc: "99 in BOOTING, allocated (event 9)"},
		{name: "unexpected event in the zero status", from: Status{}, typ: evWiped,
			wantDesc: "WIPED in UNSPECIFIED, not allocated (event 9)"},
		// Operator events are applied even when unexpected.
		{name: "allocated while installing", from: Status{State: stInstalling, Allocated: true}, typ: evAllocated,
			want: Status{State: stAllocated, Allocated: true}, wantDesc: "ALLOCATED in INSTALLING, allocated (event 9)"},
		{name: "allocated during a reclaim", from: Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(1), FailedReclaim: true}, typ: evAllocated,
			want: Status{State: stAllocated, Allocated: true}, wantDesc: "ALLOCATED in RECLAIM, not allocated (event 9)"},
		{name: "reinstall of an unallocated machine", from: Status{State: stReady}, typ: evReinstall,
			want: Status{State: stAllocated, Allocated: true}, wantDesc: "REINSTALL in READY, not allocated (event 9)"},
		{name: "reclaim of an unallocated ready machine", from: Status{State: stReady}, typ: evReclaim,
			want: Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(50), RebootPlanned: true}, wantDesc: "RECLAIM in READY, not allocated (event 9)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := tt.from
			from.Unexpected, from.LastUnexpected = 2, "earlier"
			got := Apply(from, ev(tt.typ, 9, 50, "stale"), DefaultConfig())
			want := from
			if tt.want != (Status{}) {
				want = tt.want
			}
			want.Unexpected, want.LastUnexpected = 3, tt.wantDesc
			want.LastEvent, want.LastEventTime = tt.typ, at(50)
			if d := diffStatus(want, got); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestApplyExpectedEventsAreNotCounted(t *testing.T) {
	s := Fold(history(evPXEBooting, evRegistering, evWaiting, evWiping, evWiping, evWiped, evAllocated,
		evInstalling, evInstalling, evBooting, evPhonedHome, evPhonedHome, evReinstall, evInstalling, evBooting,
		evPhonedHome, evRebooting, evPXEBooting, evPhonedHome, evReclaim, evPXEBooting, evRegistering, evWaiting,
		evWiping, evWiped), DefaultConfig())
	if s.Unexpected != 0 || s.LastUnexpected != "" || s.State != stReady {
		t.Fatalf("regular life: %+v", s)
	}
}

func TestApplyFailureReason(t *testing.T) {
	tests := []struct {
		name string
		from Status
		e    *anvilv1.Event
		want string
	}{
		{"message", Status{State: stInstalling, Allocated: true}, ev(evFailed, 4, 0, "install: checksum mismatch"), "install: checksum mismatch"},
		{"message trimmed", Status{State: stWiping}, ev(evFailed, 4, 0, "  erase failed\n"), "erase failed"},
		{"empty message", Status{State: stWiping}, ev(evFailed, 42, 0, ""), "failed without a reason while WIPING (event 42)"},
		{"blank message", Status{State: stBooting, Allocated: true}, ev(evFailed, 43, 0, " \t"), "failed without a reason while BOOTING (event 43)"},
		{"empty message, not yet numbered", Status{State: stInstalling, Allocated: true}, ev(evFailed, 0, 0, ""), "failed without a reason while INSTALLING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Apply(tt.from, tt.e, DefaultConfig())
			if got.State != stFailed || got.FailureReason != tt.want {
				t.Fatalf("got state %s reason %q, want FAILED %q", got.State, got.FailureReason, tt.want)
			}
		})
	}
}

func TestApplyProgressIsIdempotent(t *testing.T) {
	tests := []struct {
		name string
		from Status
		typ  anvilv1.EventType
		want anvilv1.MachineState
	}{
		{"wiping when ready", Status{State: stReady}, evWiping, stWiping},
		{"wiping a reclaimed machine", Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(1), RebootPlanned: true}, evWiping, stWiping},
		{"installing", Status{State: stAllocated, Allocated: true, CycleOpen: true}, evInstalling, stInstalling},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			once := Apply(tt.from, ev(tt.typ, 3, 5, "started"), DefaultConfig())
			progress := &anvilv1.Event{Seq: 4, Type: tt.typ, Time: timestamppb.New(at(6)),
				Progress: &anvilv1.Progress{BytesDone: 50, BytesTotal: 100}}
			if once.Unexpected != 0 || once.State != tt.want {
				t.Fatalf("first %s: state %s, unexpected %q", tt.typ, once.State, once.LastUnexpected)
			}
			twice := Apply(once, progress, DefaultConfig())
			want := once
			want.LastEventTime = at(6)
			if d := diffStatus(want, twice); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestFoldCrashLoop(t *testing.T) {
	boot := []anvilv1.EventType{evPXEBooting, evRegistering, evWaiting} // a good boot of an unallocated machine
	cat := func(parts ...[]anvilv1.EventType) []anvilv1.EventType {
		var out []anvilv1.EventType
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	ts := func(types ...anvilv1.EventType) []anvilv1.EventType { return types }
	tests := []struct {
		name           string
		cfg            Config
		types          []anvilv1.EventType
		wantIncomplete int
		wantCrashLoop  bool
	}{
		{"first boot counts nothing", DefaultConfig(), ts(evPXEBooting), 0, false},
		{"pxe boots that never register", DefaultConfig(), ts(evPXEBooting, evPXEBooting, evPXEBooting), 2, false},
		{"third incomplete cycle is a crash loop", DefaultConfig(), ts(evPXEBooting, evPXEBooting, evPXEBooting, evPXEBooting), 3, true},
		{"pxe then registering is one cycle", DefaultConfig(), ts(evPXEBooting, evRegistering, evPXEBooting, evRegistering, evPXEBooting, evRegistering), 2, false},
		{"agent restarts without pxe", DefaultConfig(), ts(evRegistering, evRegistering, evRegistering, evRegistering), 3, true},
		{"ready resets the count and the crash loop", DefaultConfig(), cat(ts(evPXEBooting, evPXEBooting, evPXEBooting, evPXEBooting), boot[1:]), 0, false},
		{"crash loop after ready starts from zero", DefaultConfig(), cat(ts(evPXEBooting, evPXEBooting, evPXEBooting, evPXEBooting), boot[1:], ts(evPXEBooting, evPXEBooting)), 1, false},
		{"provisioned resets the count", DefaultConfig(),
			cat(boot, ts(evAllocated, evInstalling, evBooting, evPXEBooting, evPXEBooting, evPXEBooting, evPXEBooting), ts(evPhonedHome)), 0, false},
		{"crash during install counts", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evInstalling), boot, ts(evInstalling), boot), 2, false},
		{"failed installs leave the cycle open", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evInstalling, evFailed), boot, ts(evInstalling, evFailed), boot, ts(evInstalling, evFailed), boot), 3, true},
		{"reclaim erase failing on every boot", DefaultConfig(),
			cat(boot, ts(evAllocated, evInstalling, evBooting, evPhonedHome, evReclaim), boot, ts(evWiping, evFailed), boot, ts(evWiping, evFailed), boot, ts(evWiping, evFailed), boot), 3, true},
		{"announced reboots do not count", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evRebooting), boot, ts(evPoweringOff), boot, ts(evRebooting), boot), 0, false},
		{"power actions through the BMC do not count", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evPower), boot, ts(evPower), boot), 0, false},
		{"the same reboots unannounced do count", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, boot, boot, boot), 3, true},
		{"reclaim announces its reboot", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evFailed, evReclaim), boot), 0, false},
		{"an announcement is spent by progress", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evRebooting, evInstalling), boot), 1, false},
		{"an announcement covers one boot only", DefaultConfig(),
			cat(boot, ts(evAllocated), boot, ts(evRebooting), boot, boot), 1, false},
		{"held registrations (anyone's claims) make no crash loop", DefaultConfig(),
			cat(boot, ts(evAllocated, evInstalling, evBooting, evPhonedHome, evHeld, evHeld, evHeld, evHeld, evHeld)), 0, false},
		{"threshold from config", Config{CrashLoopCycles: 1}, ts(evPXEBooting, evPXEBooting), 1, true},
		{"zero config is the default", Config{}, ts(evPXEBooting, evPXEBooting, evPXEBooting), 2, false},
		{"zero config is the default (loop)", Config{}, ts(evPXEBooting, evPXEBooting, evPXEBooting, evPXEBooting), 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Fold(history(tt.types...), tt.cfg)
			if got.IncompleteCycles != tt.wantIncomplete || got.CrashLoop != tt.wantCrashLoop {
				t.Fatalf("IncompleteCycles %d CrashLoop %v, want %d %v (%+v)", got.IncompleteCycles, got.CrashLoop, tt.wantIncomplete, tt.wantCrashLoop, got)
			}
		})
	}
}

func TestFoldScenarios(t *testing.T) {
	provisioned := []anvilv1.EventType{evPXEBooting, evRegistering, evWaiting, evWiping, evWiped, evAllocated,
		evInstalling, evInstalling, evBooting, evPhonedHome}
	then := func(more ...anvilv1.EventType) []anvilv1.EventType {
		return append(append([]anvilv1.EventType(nil), provisioned...), more...)
	}
	n := len(provisioned)
	tests := []struct {
		name  string
		types []anvilv1.EventType
		want  Status
	}{
		{"provisioned", provisioned,
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"freed machine waits in RECLAIM until erased", then(evReclaim, evPXEBooting, evRegistering, evWaiting),
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(n), CycleOpen: true}},
		{"freed machine is ready once erased", then(evReclaim, evPXEBooting, evRegistering, evWaiting, evWiping, evWiped),
			Status{State: stReady}},
		{"freed while the agent still runs", then(evReclaim, evWiping, evWiped),
			Status{State: stReady}},
		{"freed machine booted its old OS", then(evReclaim, evPhonedHome),
			Status{State: stReclaim, Reclaiming: true, ReclaimSince: at(n), RebootPlanned: true, FailedReclaim: true}},
		{"failed reclaim cleared once ready", then(evReclaim, evPhonedHome, evPXEBooting, evRegistering, evWaiting, evWiping, evWiped),
			Status{State: stReady}},
		{"failed erase during reclaim", then(evReclaim, evPXEBooting, evRegistering, evWaiting, evWiping, evFailed),
			Status{State: stFailed, FailureReason: fmt.Sprintf("failed without a reason while WIPING (event %d)", n+6), Reclaiming: true, ReclaimSince: at(n), CycleOpen: true}},
		{"failed machine freed and erased", then(evReclaim, evPXEBooting, evRegistering, evWaiting, evWiping, evFailed, evReclaim, evWiping, evWiped),
			Status{State: stReady}},
		{"reinstall", then(evReinstall, evRebooting, evPXEBooting, evRegistering, evWaiting, evInstalling, evBooting, evPhonedHome),
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"provisioned machine reboots into its OS", then(evPXEBooting, evPhonedHome),
			Status{State: stProvisioned, Allocated: true, Installed: true}},
		{"allocated machine rebooted before install", []anvilv1.EventType{evPXEBooting, evRegistering, evWaiting, evAllocated, evPXEBooting, evRegistering, evWaiting},
			Status{State: stAllocated, Allocated: true, CycleOpen: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := history(tt.types...)
			got := Fold(evs, DefaultConfig())
			want := tt.want
			want.LastEvent, want.LastEventTime = tt.types[len(tt.types)-1], at(len(tt.types)-1)
			if d := diffStatus(want, got); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestApplyNilEventAndMissingTime(t *testing.T) {
	s := Status{State: stReady, LastEvent: evWaiting, LastEventTime: at(1)}
	if got := Apply(s, nil, DefaultConfig()); got != s {
		t.Errorf("nil event changed the status: %+v", got)
	}
	got := Apply(Status{State: stProvisioned, Allocated: true, Installed: true}, &anvilv1.Event{Type: evReclaim}, DefaultConfig())
	if got.State != stReclaim || !got.Reclaiming || !got.ReclaimSince.IsZero() || !got.LastEventTime.IsZero() {
		t.Fatalf("reclaim without a time: %+v", got)
	}
	// Without a time the reclaim still holds the machine back from READY.
	got = Apply(got, &anvilv1.Event{Type: evWaiting}, DefaultConfig())
	if got.State != stReclaim || got.Unexpected != 0 {
		t.Fatalf("WAITING after a reclaim without a time: %+v", got)
	}
	got = Fold([]*anvilv1.Event{{Type: evWaiting}}, DefaultConfig())
	if got.State != stUnspecified || got.Unexpected != 1 {
		t.Fatalf("WAITING as the first event: %+v", got)
	}
}

func TestStatusJSONRoundTrip(t *testing.T) {
	s := Fold(history(evPXEBooting, evRegistering, evWaiting, evAllocated, evInstalling, evBooting, evPhonedHome,
		evReclaim, evPhonedHome, evRebooting, evBooting, evPXEBooting, evRegistering, evPXEBooting), DefaultConfig())
	if !s.Reclaiming || !s.FailedReclaim || s.Unexpected == 0 || !s.CycleOpen || s.IncompleteCycles == 0 {
		t.Fatalf("fixture does not exercise the fields: %+v", s)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if d := diffStatus(s, back); d != "" {
		t.Errorf("round trip via %s:%s", b, d)
	}
}

// checkStep verifies the invariants of one Apply.
func checkStep(prev Status, e *anvilv1.Event, next Status, cfg Config) []string {
	var errs []string
	bad := func(f string, args ...any) { errs = append(errs, fmt.Sprintf(f, args...)) }
	n := cfg.orDefaults().CrashLoopCycles
	if _, ok := anvilv1.MachineState_name[int32(next.State)]; !ok {
		bad("undefined state %d", next.State)
	}
	if (next.State == stFailed) != (next.FailureReason != "") {
		bad("state %s with failure reason %q", next.State, next.FailureReason)
	}
	if next.Allocated && (next.Reclaiming || !next.ReclaimSince.IsZero() || next.FailedReclaim) {
		bad("allocated and reclaiming")
	}
	if !next.Reclaiming && (!next.ReclaimSince.IsZero() || next.FailedReclaim) {
		bad("reclaim facts without a reclaim")
	}
	if next.State == stReady && (next.Allocated || next.Reclaiming || next.CycleOpen || next.IncompleteCycles != 0) {
		bad("READY but allocated, reclaiming or in an open cycle")
	}
	if in(next.State, stAllocated, stInstalling, stBooting, stProvisioned) && !next.Allocated {
		bad("%s without an allocation", next.State)
	}
	if next.State == stProvisioned && !next.Installed {
		bad("PROVISIONED without an installed image")
	}
	if next.State == stReclaim && (!next.Reclaiming || next.Allocated) {
		bad("RECLAIM without a reclaim")
	}
	if next.CrashLoop != (next.IncompleteCycles >= n) {
		bad("CrashLoop %v with %d incomplete cycles", next.CrashLoop, next.IncompleteCycles)
	}
	if d := next.IncompleteCycles; d != 0 && d != prev.IncompleteCycles && d != prev.IncompleteCycles+1 {
		bad("IncompleteCycles jumped from %d to %d", prev.IncompleteCycles, d)
	}
	if next.LastEvent != e.GetType() || !next.LastEventTime.Equal(eventTime(e)) {
		bad("LastEvent %s %s, want %s %s", next.LastEvent, next.LastEventTime, e.GetType(), eventTime(e))
	}
	operator := e.GetType() == evAllocated || e.GetType() == evReinstall || e.GetType() == evReclaim
	switch next.Unexpected {
	case prev.Unexpected:
		if next.LastUnexpected != prev.LastUnexpected {
			bad("LastUnexpected changed without an unexpected event")
		}
		// Progress repeated is a no-op.
		if t := e.GetType(); t == evWiping || t == evInstalling {
			if again := Apply(next, e, cfg); again != next {
				bad("repeated %s changed %+v to %+v", t, next, again)
			}
		}
	case prev.Unexpected + 1:
		if next.LastUnexpected == "" {
			bad("unexpected event not described")
		}
		if !operator {
			undo := next
			undo.Unexpected, undo.LastUnexpected = prev.Unexpected, prev.LastUnexpected
			undo.LastEvent, undo.LastEventTime = prev.LastEvent, prev.LastEventTime
			if undo != prev {
				bad("unexpected %s changed %+v to %+v", e.GetType(), prev, next)
			}
		}
	default:
		bad("Unexpected went from %d to %d", prev.Unexpected, next.Unexpected)
	}
	return errs
}

// randomEvent draws an event of any type, including unknown ones, with or
// without a message and a time.
func randomEvent(r *rand.Rand, seq int64, now time.Time) *anvilv1.Event {
	e := &anvilv1.Event{Seq: seq, Type: anvilv1.EventType(r.IntN(17) - 1)}
	if r.IntN(8) != 0 {
		e.Time = timestamppb.New(now)
	}
	if r.IntN(2) == 0 {
		e.Message = "m"
	}
	return e
}

func TestFoldRandomHistories(t *testing.T) {
	for seed := uint64(0); seed < 500; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x616e76696c))
		cfg := Config{CrashLoopCycles: r.IntN(4)} // 0 means the default
		var s Status
		now := at(0)
		var evs []*anvilv1.Event
		for i := range r.IntN(120) {
			now = now.Add(time.Duration(r.IntN(600)) * time.Second)
			e := randomEvent(r, int64(i+1), now)
			evs = append(evs, e)
			next := Apply(s, e, cfg)
			if errs := checkStep(s, e, next, cfg); len(errs) > 0 {
				t.Fatalf("seed %d event %d (%s): %s", seed, i, e.GetType(), strings.Join(errs, "; "))
			}
			s = next
		}
		if got := Fold(evs, cfg); got != s {
			t.Fatalf("seed %d: Fold %+v differs from repeated Apply %+v", seed, got, s)
		}
	}
}

// FuzzApply folds arbitrary histories: each byte is an event whose type is
// the low 4 bits (15 is unknown) and whose delay after the previous one is
// the high 4 bits in minutes (15: no time at all). Every step must keep the
// invariants checkStep verifies.
func FuzzApply(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzApply (provision, reclaim, crash loop, nonsense).
	f.Fuzz(func(t *testing.T, data []byte, msg string) {
		cfg := DefaultConfig()
		var s Status
		now := at(0)
		for i, b := range data {
			e := &anvilv1.Event{Seq: int64(i + 1), Type: anvilv1.EventType(b & 0x0f), Message: msg}
			if d := b >> 4; d != 15 {
				now = now.Add(time.Duration(d) * time.Minute)
				e.Time = timestamppb.New(now)
			}
			next := Apply(s, e, cfg)
			if errs := checkStep(s, e, next, cfg); len(errs) > 0 {
				t.Fatalf("event %d (%s): %s", i, e.GetType(), strings.Join(errs, "; "))
			}
			s = next
		}
	})
}
