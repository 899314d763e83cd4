package lifecycle

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes crash-loop detection and the time-derived facts.
//
// Validate checks a Config before use. Apply and Derive never fail: a zero
// or negative field behaves as its DefaultConfig value.
type Config struct {
	// CrashLoopCycles is how many incomplete boot cycles in a row make a
	// crash loop.
	CrashLoopCycles int
	// A machine last seen less than AliveTimeout ago is ALIVE; more than
	// DeadTimeout ago, DEAD; in between (bounds included), UNKNOWN.
	AliveTimeout time.Duration
	DeadTimeout  time.Duration
	// ReclaimTimeout is how long a freed machine may take to become READY
	// before its reclaim counts as failed.
	ReclaimTimeout time.Duration
}

// DefaultConfig returns the defaults: a crash loop after 3 incomplete
// cycles, ALIVE under 2 minutes, DEAD over 10 minutes, and a 30 minute
// reclaim timeout.
func DefaultConfig() Config {
	return Config{
		CrashLoopCycles: 3,
		AliveTimeout:    2 * time.Minute,
		DeadTimeout:     10 * time.Minute,
		ReclaimTimeout:  30 * time.Minute,
	}
}

// Validate reports every problem of c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.CrashLoopCycles < 1 {
		errs = append(errs, fmt.Errorf("crash loop cycles %d: must be at least 1", c.CrashLoopCycles))
	}
	if c.AliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("alive timeout %s: must be positive", c.AliveTimeout))
	}
	if c.DeadTimeout <= c.AliveTimeout {
		errs = append(errs, fmt.Errorf("dead timeout %s: must be longer than the alive timeout %s", c.DeadTimeout, c.AliveTimeout))
	}
	if c.ReclaimTimeout <= 0 {
		errs = append(errs, fmt.Errorf("reclaim timeout %s: must be positive", c.ReclaimTimeout))
	}
	return errors.Join(errs...)
}

// orDefaults replaces unset (zero or negative) fields by their defaults.
func (c Config) orDefaults() Config {
	d := DefaultConfig()
	if c.CrashLoopCycles <= 0 {
		c.CrashLoopCycles = d.CrashLoopCycles
	}
	if c.AliveTimeout <= 0 {
		c.AliveTimeout = d.AliveTimeout
	}
	if c.DeadTimeout <= 0 {
		c.DeadTimeout = d.DeadTimeout
	}
	if c.ReclaimTimeout <= 0 {
		c.ReclaimTimeout = d.ReclaimTimeout
	}
	return c
}
