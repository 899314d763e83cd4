// Package powerpolicy decides, as pure functions of what the controller saw
// and of the time, what it does about machines' BMCs:
//
//   - BMC health (Observe): which outcome of a BMC call changes the BMC's
//     condition (healthy, wrong credentials, unreachable, garbage, refused),
//     so that the controller records one event per change and not one per
//     call; and when the periodic checks may ask a failing BMC again
//     (doubling waits, capped; never again after wrong credentials until the
//     address is set again or an operator's power action succeeds).
//   - Recovery power cycles (Next): a machine that shows no sign of life
//     after the controller reset it into PXE, or that crash-loops, is
//     power-cycled into PXE again after a deadline that doubles each time,
//     at most a bounded number of times, and then left alone.
//
// It performs no I/O; controller/server keeps the per-machine values in
// memory and makes the BMC calls.
package powerpolicy

import (
	"errors"
	"fmt"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
)

// Condition is how a BMC answered the controller's last call.
type Condition int

// Conditions.
const (
	// Healthy: the last call succeeded (or the BMC was never asked).
	Healthy Condition = iota
	// BadCredentials: the BMC refused the credentials (bmc.ErrAuth).
	// Periodic calls stop: a wrong password retried locks BMC accounts.
	BadCredentials
	// Unreachable: no answer (bmc.ErrUnreachable).
	Unreachable
	// Garbage: an answer that is not valid for the protocol
	// (bmc.ErrProtocol).
	Garbage
	// Refused: any other failure: the BMC refused the command, or its
	// address cannot be used (unsupported, unparsable, sealed with another
	// key).
	Refused
)

func (c Condition) String() string {
	switch c {
	case Healthy:
		return "healthy"
	case BadCredentials:
		return "refused the credentials"
	case Unreachable:
		return "unreachable"
	case Garbage:
		return "answered garbage"
	case Refused:
		return "refused the command"
	}
	return fmt.Sprintf("condition %d", int(c))
}

// Classify maps the outcome of a BMC call to a Condition (nil is Healthy).
func Classify(err error) Condition {
	switch {
	case err == nil:
		return Healthy
	case errors.Is(err, bmc.ErrAuth):
		return BadCredentials
	case errors.Is(err, bmc.ErrUnreachable):
		return Unreachable
	case errors.Is(err, bmc.ErrProtocol):
		return Garbage
	}
	return Refused
}

// Health is what the controller knows of one BMC. The zero value is a BMC
// never asked (or forgotten: a new address).
type Health struct {
	Condition Condition
	// Since is when the condition began (zero while Healthy).
	Since time.Time
	// Failures counts the calls that failed in a row (0 while Healthy).
	Failures int
	// Retry is the earliest time periodic checks ask a failing BMC again;
	// zero while Healthy.
	Retry time.Time
}

// MayAsk reports whether a periodic check or sweep may call the BMC at
// now: never after wrong credentials, not before Retry after another
// failure. Calls an operator asks for are always made.
func (h Health) MayAsk(now time.Time) bool {
	return h.Condition != BadCredentials && !now.Before(h.Retry)
}

// Backoff bounds the waits between periodic calls to a failing BMC: First
// after the first failure, doubling with each failure in a row, at most
// Max.
type Backoff struct {
	First, Max time.Duration
}

// Wait is the wait after the n-th failure in a row (n >= 1):
// First·2^(n-1), at most Max (and at least First).
func (b Backoff) Wait(n int) time.Duration {
	w := b.First
	for i := 1; i < n && w < b.Max; i++ {
		w *= 2
	}
	return min(w, max(b.Max, b.First))
}

// Observe folds the outcome of one call made at now into h. changed
// reports whether the BMC's condition changed, which is worth one event:
// a first failure, a failure of another kind than the previous one, or a
// success after failures. Repeated failures of one kind and successes of a
// healthy BMC change nothing.
func Observe(h Health, err error, now time.Time, b Backoff) (next Health, changed bool) {
	c := Classify(err)
	if c == Healthy {
		return Health{}, h.Condition != Healthy
	}
	next = Health{Condition: c, Since: h.Since, Failures: h.Failures + 1}
	if c != h.Condition {
		next.Since, next.Failures, changed = now, 1, true
	}
	if c != BadCredentials {
		next.Retry = now.Add(b.Wait(next.Failures))
	}
	return next, changed
}

// Reason is why a machine is watched for recovery power cycles.
type Reason int

// Reasons.
const (
	// NoReason: not watched.
	NoReason Reason = iota
	// NoAgent: the controller reset the machine into PXE to get its agent
	// (free, reinstall); the agent must show up.
	NoAgent
	// CrashLoop: the machine's boot cycles keep failing (the lifecycle's
	// crash_loop flag); it must complete one.
	CrashLoop
)

func (r Reason) String() string {
	switch r {
	case NoAgent:
		return "no agent"
	case CrashLoop:
		return "crash loop"
	}
	return "none"
}

// Cycle is the recovery watch of one machine.
type Cycle struct {
	Reason Reason
	// Since is when the watch began or the last power cycle was made.
	Since time.Time
	// Attempts counts the power cycles made.
	Attempts int
	// GaveUp: the attempts are spent; the machine is left alone until an
	// operator acts (or, for a crash loop, until it completes a boot
	// cycle).
	GaveUp bool
}

// Limits bound the recovery power cycles.
type Limits struct {
	// Deadline is how long the machine has after the reset that began the
	// watch; after the k-th power cycle it has Deadline·2^k. 0 switches
	// recovery off.
	Deadline time.Duration
	// Max is how many power cycles at most (then the machine is left
	// alone).
	Max int
}

// MaxCycles bounds Limits.Max (and so the longest wait, Deadline·2^Max).
const MaxCycles = 10

// Validate reports bad limits.
func (l Limits) Validate() error {
	var errs []error
	if l.Deadline < 0 {
		errs = append(errs, fmt.Errorf("boot deadline %v is negative", l.Deadline))
	}
	if l.Max < 0 || l.Max > MaxCycles {
		errs = append(errs, fmt.Errorf("boot power cycles %d: want 0 to %d", l.Max, MaxCycles))
	}
	return errors.Join(errs...)
}

// Wait is how long the machine has after its attempts-th power cycle (0:
// after the reset that began the watch): Deadline·2^attempts.
func (l Limits) Wait(attempts int) time.Duration {
	return l.Deadline << min(max(attempts, 0), MaxCycles)
}

// Facts are what the controller knows of a machine at a sweep.
type Facts struct {
	Now time.Time
	// LastSeen is when the machine's agent (or installed system) last
	// talked to the controller.
	LastSeen time.Time
	// CrashLoop is the lifecycle's crash_loop flag.
	CrashLoop bool
}

// Step is what a sweep does about one machine.
type Step int

// Steps.
const (
	// Nothing: keep waiting (or the machine is left alone).
	Nothing Step = iota
	// PowerCycle: power-cycle the machine into PXE now (attempt
	// Cycle.Attempts of the returned cycle).
	PowerCycle
	// GiveUp: the attempts are spent: record that the machine is left
	// alone.
	GiveUp
)

// Next decides the step for a machine under watch c and returns the watch
// after it. A machine not watched starts a CrashLoop watch when it is
// flagged crash-looping (NoAgent watches are begun by the caller, at the
// reset); a watch ends (the zero Cycle) when the machine talked after it
// began (NoAgent) or is no longer crash-looping (CrashLoop). Otherwise,
// once Wait(Attempts) has passed since Since, the machine is power-cycled
// again while fewer than Max attempts were made, and given up once. A
// PowerCycle's watch is to be kept only when the power cycle succeeded: a
// failed one is tried again at a later sweep (the BMC's Health bounds how
// often).
func Next(c Cycle, f Facts, l Limits) (Cycle, Step) {
	if l.Deadline <= 0 {
		return Cycle{}, Nothing
	}
	switch c.Reason {
	case NoReason:
		if f.CrashLoop {
			return Cycle{Reason: CrashLoop, Since: f.Now}, Nothing
		}
		return Cycle{}, Nothing
	case NoAgent:
		if f.LastSeen.After(c.Since) {
			return Cycle{}, Nothing
		}
	case CrashLoop:
		if !f.CrashLoop {
			return Cycle{}, Nothing
		}
	}
	if c.GaveUp || f.Now.Before(c.Since.Add(l.Wait(c.Attempts))) {
		return c, Nothing
	}
	if c.Attempts >= l.Max {
		c.GaveUp = true
		return c, GiveUp
	}
	c.Attempts++
	c.Since = f.Now
	return c, PowerCycle
}
