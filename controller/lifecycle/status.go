// Package lifecycle is the pure state machine that derives a machine's state
// from its append-only event history. It performs no I/O: callers fold events
// into a Status with Apply and ask Derive for time-dependent facts
// (liveliness, failed reclaim) at a given instant.
package lifecycle

import (
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Status is the fold of a machine's events. It is stored beside the machine
// so that capping the event history never changes the derived state.
type Status struct {
	State anvilv1.MachineState `json:"state"`
	// FailureReason is the operator-readable reason while State is FAILED.
	FailureReason string `json:"failure_reason,omitempty"`
	// Allocated is true between an ALLOCATED and a RECLAIM event.
	Allocated bool `json:"allocated,omitempty"`
	// LastEvent is the type and time of the last event applied.
	LastEvent     anvilv1.EventType `json:"last_event,omitempty"`
	LastEventTime time.Time         `json:"last_event_time,omitempty"`
	// IncompleteCycles counts boot cycles (PXE_BOOTING/REGISTERING) that
	// began before the previous one reached READY or PROVISIONED.
	IncompleteCycles int  `json:"incomplete_cycles,omitempty"`
	CrashLoop        bool `json:"crash_loop,omitempty"`
	// ReclaimSince is when the machine was last freed; zero once it is Ready.
	ReclaimSince time.Time `json:"reclaim_since,omitempty"`
	// FailedReclaim is set when a freed machine booted its installed OS
	// (phoned home) instead of the agent.
	FailedReclaim bool `json:"failed_reclaim,omitempty"`

	// Reclaiming is true from a RECLAIM until the machine is READY again
	// (its disks erased). It does not depend on the event carrying a time.
	Reclaiming bool `json:"reclaiming,omitempty"`
	// Installed is true once the current allocation's image was written and
	// booted (BOOTING or PHONED_HOME); ALLOCATED, REINSTALL and RECLAIM clear
	// it. It lets a PHONED_HOME after a reboot (state PXE_BOOTING or
	// REGISTERING) be recognised as the installed OS coming back.
	Installed bool `json:"installed,omitempty"`
	// CycleOpen is true while the current boot cycle has not yet reached
	// READY or PROVISIONED.
	CycleOpen bool `json:"cycle_open,omitempty"`
	// RebootPlanned is true after a RECLAIM, REBOOTING, POWERING_OFF or POWER until
	// the next boot cycle starts or the machine shows it kept running; the
	// boot cycle it announces is not counted in IncompleteCycles.
	RebootPlanned bool `json:"reboot_planned,omitempty"`
	// Unexpected counts events that made no sense in the state they arrived
	// in; LastUnexpected describes the latest one. See Apply.
	Unexpected     int    `json:"unexpected,omitempty"`
	LastUnexpected string `json:"last_unexpected,omitempty"`
}
