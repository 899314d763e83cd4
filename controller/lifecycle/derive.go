package lifecycle

import (
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Derived holds the facts about a machine that depend on the current time.
type Derived struct {
	Liveliness    anvilv1.Liveliness
	FailedReclaim bool
}

// Derive computes the time-dependent facts at now.
//
// Liveliness: a machine last seen less than cfg.AliveTimeout ago is ALIVE
// (also when lastSeen is in the future: clock skew), more than
// cfg.DeadTimeout ago DEAD, and UNKNOWN in between, bounds included. A zero
// lastSeen (never seen) is UNKNOWN.
//
// FailedReclaim is s.FailedReclaim (the freed machine phoned home from its
// old OS), or a reclaim still not READY more than cfg.ReclaimTimeout after
// the RECLAIM, whatever state it is stuck in (RECLAIM, WIPING, FAILED, or a
// boot that never came back).
func Derive(s Status, lastSeen, now time.Time, cfg Config) Derived {
	cfg = cfg.orDefaults()
	d := Derived{Liveliness: liveliness(lastSeen, now, cfg), FailedReclaim: s.FailedReclaim}
	if s.Reclaiming && !s.ReclaimSince.IsZero() && now.Sub(s.ReclaimSince) > cfg.ReclaimTimeout {
		d.FailedReclaim = true
	}
	return d
}

func liveliness(lastSeen, now time.Time, cfg Config) anvilv1.Liveliness {
	if lastSeen.IsZero() {
		return anvilv1.Liveliness_LIVELINESS_UNKNOWN
	}
	switch age := now.Sub(lastSeen); {
	case age < cfg.AliveTimeout:
		return anvilv1.Liveliness_LIVELINESS_ALIVE
	case age > cfg.DeadTimeout:
		return anvilv1.Liveliness_LIVELINESS_DEAD
	default:
		return anvilv1.Liveliness_LIVELINESS_UNKNOWN
	}
}
