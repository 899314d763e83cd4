package lifecycle

import (
	"fmt"
	"strings"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Short names for the states and events used below.
const (
	stUnspecified = anvilv1.MachineState_MACHINE_STATE_UNSPECIFIED
	stPXEBooting  = anvilv1.MachineState_MACHINE_STATE_PXE_BOOTING
	stRegistering = anvilv1.MachineState_MACHINE_STATE_REGISTERING
	stReady       = anvilv1.MachineState_MACHINE_STATE_READY
	stAllocated   = anvilv1.MachineState_MACHINE_STATE_ALLOCATED
	stWiping      = anvilv1.MachineState_MACHINE_STATE_WIPING
	stInstalling  = anvilv1.MachineState_MACHINE_STATE_INSTALLING
	stBooting     = anvilv1.MachineState_MACHINE_STATE_BOOTING
	stProvisioned = anvilv1.MachineState_MACHINE_STATE_PROVISIONED
	stReclaim     = anvilv1.MachineState_MACHINE_STATE_RECLAIM
	stFailed      = anvilv1.MachineState_MACHINE_STATE_FAILED
	stApproval    = anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL

	evPXEBooting  = anvilv1.EventType_EVENT_TYPE_PXE_BOOTING
	evRegistering = anvilv1.EventType_EVENT_TYPE_REGISTERING
	evWaiting     = anvilv1.EventType_EVENT_TYPE_WAITING
	evAllocated   = anvilv1.EventType_EVENT_TYPE_ALLOCATED
	evWiping      = anvilv1.EventType_EVENT_TYPE_WIPING
	evWiped       = anvilv1.EventType_EVENT_TYPE_WIPED
	evInstalling  = anvilv1.EventType_EVENT_TYPE_INSTALLING
	evBooting     = anvilv1.EventType_EVENT_TYPE_BOOTING
	evPhonedHome  = anvilv1.EventType_EVENT_TYPE_PHONED_HOME
	evReclaim     = anvilv1.EventType_EVENT_TYPE_RECLAIM
	evFailed      = anvilv1.EventType_EVENT_TYPE_FAILED
	evRebooting   = anvilv1.EventType_EVENT_TYPE_REBOOTING
	evPoweringOff = anvilv1.EventType_EVENT_TYPE_POWERING_OFF
	evReinstall   = anvilv1.EventType_EVENT_TYPE_REINSTALL
	evPower       = anvilv1.EventType_EVENT_TYPE_POWER
	evSecurity    = anvilv1.EventType_EVENT_TYPE_SECURITY
	evBMC         = anvilv1.EventType_EVENT_TYPE_BMC
	evHeld        = anvilv1.EventType_EVENT_TYPE_HELD
	evApproved    = anvilv1.EventType_EVENT_TYPE_APPROVED
)

// Apply folds one event into s and returns the result. It is pure: the
// event's own time is the only clock, and a nil event returns s unchanged.
//
// Transitions (the state on the left of "in" is where the event is
// expected; "idle" means REGISTERING, READY, ALLOCATED or RECLAIM, the states
// in which the agent is up and waiting):
//
//	PXE_BOOTING  any state            → PXE_BOOTING; starts a boot cycle; a
//	                                    PROVISIONED machine whose image is
//	                                    installed stays PROVISIONED (the boot
//	                                    service sends it to its disk; the
//	                                    cycle completes when it phones home)
//	REGISTERING  any state            → REGISTERING; starts a boot cycle unless
//	                                    the machine is in PXE_BOOTING (same boot)
//	HELD         any state            → AWAITING_APPROVAL; starts a boot cycle
//	                                    like REGISTERING (an agent registered, but
//	                                    its session is not trusted yet)
//	APPROVED     AWAITING_APPROVAL    → REGISTERING (the session is trusted; the
//	                                    controller queues its work or records
//	                                    WAITING, as after a registration)
//	SECURITY     any state            state kept (a refused request, recorded)
//	BMC          any state            state kept (the controller's dealings
//	                                    with the machine's BMC, recorded)
//	WAITING      idle                 → ALLOCATED if allocated; RECLAIM while a
//	                                    reclaim still awaits its erase; else READY
//	ALLOCATED    READY, not allocated → ALLOCATED; allocated
//	REINSTALL    allocated            → ALLOCATED; the image must be installed again
//	WIPING       idle, WIPING         → WIPING (repeated progress keeps it)
//	WIPED        idle, WIPING         → ALLOCATED if allocated, else READY
//	INSTALLING   allocated and ALLOCATED, REGISTERING or INSTALLING
//	                                  → INSTALLING (repeated progress keeps it)
//	BOOTING      allocated and ALLOCATED, REGISTERING, INSTALLING or BOOTING
//	                                  → BOOTING; the image is installed
//	PHONED_HOME  allocated, and installed or INSTALLING/BOOTING
//	                                  → PROVISIONED
//	PHONED_HOME  while reclaiming     → state kept; FailedReclaim (the freed
//	                                    machine booted its old OS)
//	RECLAIM      allocated or FAILED  → RECLAIM; not allocated; ReclaimSince
//	FAILED       any state            → FAILED; FailureReason is the message,
//	                                    or a generated reason when it is empty
//	REBOOTING, POWERING_OFF           state kept; the next boot cycle is planned
//	POWER        any state            state kept; the next boot cycle is planned
//	                                    (an operator powered the machine on, off
//	                                    or reset it through its BMC: the boot
//	                                    that follows is no crash)
//
// READY clears ReclaimSince, Reclaiming and FailedReclaim. READY and
// PROVISIONED complete the boot cycle: IncompleteCycles goes back to 0. A boot
// cycle that starts while the previous one is still open counts as
// incomplete, unless a RECLAIM, REBOOTING, POWERING_OFF or POWER announced it;
// CrashLoop is IncompleteCycles >= cfg.CrashLoopCycles. FailureReason is kept
// exactly while the state is FAILED.
//
// Unexpected events: an event outside the states listed for it is counted in
// Unexpected and described in LastUnexpected. An agent or machine event
// (everything but ALLOCATED, REINSTALL and RECLAIM) is then otherwise
// ignored: state, allocation and cycle counting stay as they were, so a stale
// or bogus report cannot corrupt the machine. The operator events ALLOCATED,
// REINSTALL and RECLAIM are applied even when unexpected, because the
// controller has already acted on them (queued an install or an erase);
// ignoring them would leave Status disagreeing with the machine record.
// Events of an unspecified or unknown type are unexpected everywhere.
//
// LastEvent and LastEventTime are set by every event, expected or not.
func Apply(s Status, e *anvilv1.Event, cfg Config) Status {
	if e == nil {
		return s
	}
	cfg = cfg.orDefaults()
	before := s
	t := eventTime(e)
	if !step(&s, e, t) {
		s.Unexpected = before.Unexpected + 1
		s.LastUnexpected = describeUnexpected(before, e)
	}
	if s.State != stFailed {
		s.FailureReason = ""
	}
	s.CrashLoop = s.IncompleteCycles >= cfg.CrashLoopCycles
	s.LastEvent = e.GetType()
	s.LastEventTime = t
	return s
}

// Fold applies events in order to the zero Status.
func Fold(events []*anvilv1.Event, cfg Config) Status {
	var s Status
	for _, e := range events {
		s = Apply(s, e, cfg)
	}
	return s
}

// step applies e to s and reports whether e was expected. An unexpected
// agent event leaves s untouched; an unexpected operator event is applied.
func step(s *Status, e *anvilv1.Event, t time.Time) bool {
	switch e.GetType() {
	case evPXEBooting:
		s.startCycle()
		if !(s.State == stProvisioned && s.Allocated && s.Installed) {
			s.State = stPXEBooting
		}
	case evRegistering, evHeld:
		// A held registration is an untrusted claim: anyone on the boot
		// network can make one for any machine, so it starts no boot cycle
		// (and cannot make a machine look crash-looping).
		if s.State != stPXEBooting && e.GetType() == evRegistering {
			s.startCycle()
		}
		s.State = stRegistering
		if e.GetType() == evHeld {
			s.State = stApproval
		}
	case evWaiting:
		if !idle(s.State) {
			return false
		}
		s.waiting()
	case evApproved:
		if s.State != stApproval {
			return false
		}
		s.State = stRegistering
	case evSecurity, evBMC:
	case evAllocated:
		expected := s.State == stReady && !s.Allocated
		s.allocate()
		return expected
	case evReinstall:
		expected := s.Allocated
		s.allocate()
		return expected
	case evWiping:
		if !idle(s.State) && s.State != stWiping {
			return false
		}
		s.RebootPlanned = false
		s.State = stWiping
	case evWiped:
		if !idle(s.State) && s.State != stWiping {
			return false
		}
		s.RebootPlanned = false
		if s.Allocated {
			s.State = stAllocated
		} else {
			s.ready()
		}
	case evInstalling:
		if !s.Allocated || !in(s.State, stAllocated, stRegistering, stInstalling) {
			return false
		}
		s.RebootPlanned = false
		s.State = stInstalling
	case evBooting:
		if !s.Allocated || !in(s.State, stAllocated, stRegistering, stInstalling, stBooting) {
			return false
		}
		s.RebootPlanned = false
		s.Installed = true
		s.State = stBooting
	case evPhonedHome:
		switch {
		case s.Reclaiming:
			s.FailedReclaim = true
		case s.Allocated && (s.Installed || in(s.State, stInstalling, stBooting)):
			s.RebootPlanned = false
			s.Installed = true
			s.State = stProvisioned
			s.completeCycle()
		default:
			return false
		}
	case evReclaim:
		expected := s.Allocated || s.State == stFailed
		s.State = stReclaim
		s.Allocated = false
		s.Installed = false
		s.Reclaiming = true
		s.ReclaimSince = t
		s.FailedReclaim = false
		s.RebootPlanned = true
		return expected
	case evFailed:
		reason := strings.TrimSpace(e.GetMessage())
		if reason == "" {
			reason = "failed without a reason while " + stateName(s.State) + seqSuffix(e)
		}
		s.RebootPlanned = false
		s.State = stFailed
		s.FailureReason = reason
	case evRebooting, evPoweringOff, evPower:
		s.RebootPlanned = true
	default:
		return false
	}
	return true
}

// waiting moves s to where an agent waiting for instructions is.
func (s *Status) waiting() {
	s.RebootPlanned = false
	switch {
	case s.Allocated:
		s.State = stAllocated
	case s.Reclaiming:
		s.State = stReclaim
	default:
		s.ready()
	}
}

// idle reports whether the agent is up and waiting for instructions in st.
func idle(st anvilv1.MachineState) bool {
	return in(st, stRegistering, stReady, stAllocated, stReclaim)
}

func in(st anvilv1.MachineState, set ...anvilv1.MachineState) bool {
	for _, x := range set {
		if st == x {
			return true
		}
	}
	return false
}

// startCycle begins a boot cycle, counting the open one as incomplete unless
// this boot was announced.
func (s *Status) startCycle() {
	if s.CycleOpen && !s.RebootPlanned {
		s.IncompleteCycles++
	}
	s.CycleOpen = true
	s.RebootPlanned = false
}

func (s *Status) completeCycle() {
	s.CycleOpen = false
	s.IncompleteCycles = 0
}

// ready moves s to READY: the reclaim, if any, is over.
func (s *Status) ready() {
	s.State = stReady
	s.clearReclaim()
	s.completeCycle()
}

// allocate records an allocation (ALLOCATED or REINSTALL): the image is yet
// to be installed.
func (s *Status) allocate() {
	s.State = stAllocated
	s.Allocated = true
	s.Installed = false
	s.clearReclaim()
}

func (s *Status) clearReclaim() {
	s.Reclaiming = false
	s.ReclaimSince = time.Time{}
	s.FailedReclaim = false
}

// eventTime is the event's time, or the zero time when it has none.
func eventTime(e *anvilv1.Event) time.Time {
	if ts := e.GetTime(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}

func stateName(st anvilv1.MachineState) string {
	return strings.TrimPrefix(st.String(), "MACHINE_STATE_")
}

func eventName(t anvilv1.EventType) string {
	return strings.TrimPrefix(t.String(), "EVENT_TYPE_")
}

func seqSuffix(e *anvilv1.Event) string {
	if e.GetSeq() == 0 {
		return ""
	}
	return fmt.Sprintf(" (event %d)", e.GetSeq())
}

// describeUnexpected says which event arrived in which situation, e.g.
// "PHONED_HOME in READY, not allocated (event 12)".
func describeUnexpected(s Status, e *anvilv1.Event) string {
	alloc := "not allocated"
	if s.Allocated {
		alloc = "allocated"
	}
	return fmt.Sprintf("%s in %s, %s%s", eventName(e.GetType()), stateName(s.State), alloc, seqSuffix(e))
}
