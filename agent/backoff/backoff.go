// Package backoff computes capped exponential retry delays with full jitter
// (the "Full Jitter" scheme: delay = random in [0, min(cap, base·2^attempt)]),
// so that a rack of agents whose controller came back does not reconnect in
// lock-step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff. The zero value is not useful; use
// Default or fill every field.
type Policy struct {
	Base time.Duration // first ceiling
	Cap  time.Duration // largest ceiling
	// Rand returns a value in [0,1); nil uses math/rand/v2.
	Rand func() float64
}

// Default is 250 ms doubling up to 30 s.
func Default() Policy { return Policy{Base: 250 * time.Millisecond, Cap: 30 * time.Second} }

// Ceiling is the upper bound of the delay before retry number attempt (0-based).
func (p Policy) Ceiling(attempt int) time.Duration {
	d := p.Base
	for i := 0; i < attempt && d < p.Cap; i++ {
		d *= 2
	}
	return min(d, p.Cap)
}

// Delay is a random delay in [0, Ceiling(attempt)].
func (p Policy) Delay(attempt int) time.Duration {
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	return time.Duration(r() * float64(p.Ceiling(attempt)))
}

// Sleep waits Delay(attempt) or until ctx is done, returning ctx.Err() then.
func (p Policy) Sleep(ctx context.Context, attempt int) error {
	t := time.NewTimer(p.Delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
