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
}
