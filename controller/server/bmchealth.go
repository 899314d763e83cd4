package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/powerpolicy"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// healthEntry is a machine's BMC health and the stored (sealed) address it
// belongs to: another address is another BMC, healthy until asked.
type healthEntry struct {
	addr string
	h    powerpolicy.Health
}

// bmcHealth keeps what each machine's BMC answered last (derived facts:
// in memory, lost at a restart). Bounded: one entry per machine with a
// BMC; entries of machines that are gone or have no BMC are dropped at
// every sweep (prune).
type bmcHealth struct {
	perMachine[healthEntry]
}

// health returns the health of machine id's BMC at the stored address
// addr.
func (b *bmcHealth) health(id, addr string) powerpolicy.Health {
	e, ok := b.get(id)
	if !ok || e.addr != addr {
		return powerpolicy.Health{}
	}
	return e.h
}

// observe folds the outcome of one call into the health of machine id's
// BMC at addr; it returns the health before and whether the condition
// changed.
func (b *bmcHealth) observe(id, addr string, err error, now time.Time, bo powerpolicy.Backoff) (before powerpolicy.Health, changed bool) {
	b.update(id, func(e healthEntry, ok bool) (healthEntry, bool) {
		if !ok || e.addr != addr {
			e = healthEntry{addr: addr}
		}
		before = e.h
		e.h, changed = powerpolicy.Observe(e.h, err, now, bo)
		return e, e.h != (powerpolicy.Health{})
	})
	return before, changed
}

// backoff is how periodic calls to a failing BMC are spaced.
func (s *Server) backoff() powerpolicy.Backoff {
	return powerpolicy.Backoff{First: s.cfg.BMCCheckInterval, Max: s.cfg.BMCBackoffMax}
}

// noteBMC folds the outcome of a call to m's BMC (addr is its unsealed
// address, "" when it could not be unsealed) into the BMC's health, and
// records one BMC event, by actor, when the condition changed: a first
// failure, another kind of failure, or the BMC answering again. Repeated
// failures of one kind are logged at debug level only; a call cut short by
// its context is not counted. The event names the
// BMC without its password and scrubs the password from the error.
func (s *Server) noteBMC(ctx context.Context, m *store.Machine, addr string, err error, actor string) {
	if err != nil && ctx.Err() != nil {
		return // the call was cut short: that says nothing of the BMC
	}
	now := s.now()
	before, changed := s.health.observe(m.ID, m.BMC, err, now, s.backoff())
	if !changed {
		if err != nil {
			s.log.Debug("BMC still failing", "machine", m.ID, "bmc", shownAddr(addr), "err", scrub(err, addr))
		}
		return
	}
	shown := shownAddr(addr)
	var msg string
	switch c := powerpolicy.Classify(err); c {
	case powerpolicy.Healthy:
		msg = fmt.Sprintf("BMC %s answers again (it %s since %s, %d failed calls)", shown, before.Condition, before.Since.UTC().Format(time.RFC3339), before.Failures)
	case powerpolicy.BadCredentials:
		msg = fmt.Sprintf("BMC %s refused the credentials: %s; the controller stops asking it until its address is set again (anvilctl machine bmc) or an operator's power action through it succeeds", shown, scrub(err, addr))
	default:
		msg = fmt.Sprintf("BMC %s %s: %s; the controller asks it again after waits from %v doubling up to %v", shown, c, scrub(err, addr), s.cfg.BMCCheckInterval, s.cfg.BMCBackoffMax)
	}
	if err != nil {
		s.log.Warn("BMC failing", "machine", m.ID, "bmc", shown, "err", scrub(err, addr))
	} else {
		s.log.Info("BMC answers again", "machine", m.ID, "bmc", shown)
	}
	ev := &anvilv1.Event{Time: timestamppb.New(now), Type: anvilv1.EventType_EVENT_TYPE_BMC, Actor: actor, Message: msg}
	if err := s.recordEvent(ctx, m.ID, nil, ev); err != nil {
		s.log.Warn("recording a BMC event", "machine", m.ID, "err", err)
	}
}

// recordEvent records ev for machine id in its own transaction, after
// edit (if any) changed the machine (read Light: without its
// inventories, which stay as stored).
func (s *Server) recordEvent(ctx context.Context, id string, edit func(*store.Machine, *effects), ev *anvilv1.Event) error {
	return s.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachineLight(ctx, id)
		if err != nil {
			return err
		}
		if edit != nil {
			edit(m, fx)
		}
		return s.record(ctx, tx, fx, m, false, ev)
	})
}

// shownAddr is an unsealed BMC address for display.
func shownAddr(addr string) string {
	if addr == "" {
		return "(sealed with another key)"
	}
	return bmc.Redact(addr)
}

// scrub is err's text with addr's password (and addr itself) masked, for
// events and logs: drivers name the host, but a library's error might
// repeat more.
func scrub(err error, addr string) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if addr == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, addr, bmc.Redact(addr))
	if a, perr := bmc.ParseAddress(addr); perr == nil && a.Password != "" {
		msg = strings.ReplaceAll(msg, a.Password, "xxxxx")
	}
	return msg
}
