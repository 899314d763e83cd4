package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/powerpolicy"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// recoveryCycles keeps the recovery watch of each machine (in memory: a
// restart of the controller forgets the watches, so at most
// BootPowerCycles power cycles per machine and controller run). Bounded:
// one entry per machine with a BMC; entries of machines that are gone or
// lost their BMC are dropped at every sweep.
type recoveryCycles struct {
	perMachine[powerpolicy.Cycle]
}

// cycle returns machine id's watch (zero when none).
func (r *recoveryCycles) cycle(id string) powerpolicy.Cycle {
	c, _ := r.get(id)
	return c
}

// swap sets machine id's watch to next if it is still old (an operator
// may have acted while the sweep talked to the BMC); it reports whether it
// did.
func (r *recoveryCycles) swap(id string, old, next powerpolicy.Cycle) bool {
	done := false
	r.update(id, func(c powerpolicy.Cycle, ok bool) (powerpolicy.Cycle, bool) {
		if c != old {
			return c, ok
		}
		done = true
		return next, next != (powerpolicy.Cycle{})
	})
	return done
}

// arm begins a NoAgent watch of machine id at now: the controller just
// reset it into PXE to get its agent.
func (r *recoveryCycles) arm(id string, now time.Time) {
	r.set(id, powerpolicy.Cycle{Reason: powerpolicy.NoAgent, Since: now})
}

// limits are the recovery power cycles' bounds.
func (s *Server) limits() powerpolicy.Limits {
	return powerpolicy.Limits{Deadline: s.cfg.BootDeadline, Max: s.cfg.BootPowerCycles}
}

// RecoverMachines is the recovery sweep; the app calls it periodically
// (every BMCCheckInterval, after CheckSilentMachines). A machine the
// controller reset into PXE to get its agent (free, reinstall) whose agent
// has not talked BootDeadline later, and a machine flagged crash-looping
// for BootDeadline, is power-cycled into PXE through its BMC (next boot
// PXE, off, on); then it gets twice as long each time, at most
// BootPowerCycles power cycles, after which one event says it is left
// alone. Each power cycle is a BMC event whose actor says why ("controller
// (no agent 10 min after reset into PXE, attempt 1/3)"). An operator's
// power action, free, reinstall or new BMC address ends the watch; so do
// the agent talking (no agent) and a completed boot cycle (crash loop).
//
// BMC calls are made outside any transaction, under the per-BMC lock, a
// few BMCs at a time, and only when the BMC's health allows (not after
// wrong credentials; not before a failing BMC's backoff ends): a failed
// power cycle counts no attempt and is tried again at a later sweep. It
// returns how many machines were power-cycled.
//
// With replicas, the leader sweeps every machine; the others only the
// watches they armed themselves (the resets they made), which live in
// their memory.
func (s *Server) RecoverMachines(ctx context.Context) (int, error) {
	ms, err := s.bmcMachines(ctx)
	if err != nil {
		return 0, err
	}
	s.prune(ms)
	now, lim, lead := s.now(), s.limits(), s.leads()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	cycled := 0
	for _, m := range ms {
		if m.BMC == "" {
			continue
		}
		c := s.cycles.cycle(m.ID)
		if !lead && c == (powerpolicy.Cycle{}) {
			// Crash loops are the leader's to find; a follower only
			// follows up the resets it made itself.
			continue
		}
		// A machine running its installed system is never power-cycled
		// for a crash loop: registrations that did not come from it (a
		// spoofer's) are what made it look like one, and its boots go to
		// its disk anyway.
		crashLoop := m.Status.CrashLoop && !(m.Allocation != nil && m.Status.Installed)
		next, step := powerpolicy.Next(c, powerpolicy.Facts{Now: now, LastSeen: s.seenAt(m), CrashLoop: crashLoop}, lim)
		switch step {
		case powerpolicy.Nothing:
			s.cycles.swap(m.ID, c, next)
		case powerpolicy.GiveUp:
			s.giveUp(ctx, m, c, next)
		case powerpolicy.PowerCycle:
			if !s.health.health(m.ID, m.BMC).MayAsk(now) {
				continue
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if c == (powerpolicy.Cycle{}) && !s.leads() {
					return // the lead moved during the sweep: the new leader decides
				}
				if s.recoveryCycle(ctx, m, c, next) {
					mu.Lock()
					cycled++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return cycled, ctx.Err()
}

// recoveryWhy is why the controller power-cycles m (for the actor).
func (s *Server) recoveryWhy(m *store.Machine, c, next powerpolicy.Cycle) string {
	lim := s.limits()
	if c.Reason == powerpolicy.CrashLoop {
		return fmt.Sprintf("crash loop: %d incomplete boot cycles in a row, %s after %s, attempt %d/%d",
			m.Status.IncompleteCycles, minutes(lim.Wait(c.Attempts)), lastCycle(c), next.Attempts, lim.Max)
	}
	return fmt.Sprintf("no agent %s after %s, attempt %d/%d", minutes(lim.Wait(c.Attempts)), lastCycle(c), next.Attempts, lim.Max)
}

// lastCycle names the controller's last power action of a watch.
func lastCycle(c powerpolicy.Cycle) string {
	switch {
	case c.Attempts > 0:
		return fmt.Sprintf("power cycle %d into PXE", c.Attempts)
	case c.Reason == powerpolicy.CrashLoop:
		return "the crash loop was seen"
	}
	return "reset into PXE"
}

// recoveryCycle power-cycles m into PXE and records it; it reports
// whether the power cycle was made.
func (s *Server) recoveryCycle(ctx context.Context, m *store.Machine, c, next powerpolicy.Cycle) bool {
	actor := controllerActor(s.recoveryWhy(m, c, next))
	addr, st, err := s.powerCycle(ctx, m)
	s.noteBMC(ctx, m, addr, err, actor)
	if err != nil {
		return false
	}
	if !s.cycles.swap(m.ID, c, next) {
		s.log.Info("an operator acted during a recovery power cycle", "machine", m.ID)
	}
	ev := &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_BMC, Actor: actor,
		Message: fmt.Sprintf("power-cycled into PXE through %s (next boot pxe, off, on): now %s", bmc.Redact(addr), st.Power)}
	err = s.recordEvent(ctx, m.ID, func(m *store.Machine, fx *effects) {
		// As after an operator's reset: the session died with the power,
		// and the boot that follows is one the controller caused.
		m.CredentialHash = nil
		fx.notify = append(fx.notify, m.ID)
		if c.Reason == powerpolicy.NoAgent {
			// The boot the free or reinstall asked for, again. A crash
			// loop's power cycle opens no trusted-boot window: the
			// registrations that looped may not have been the machine's.
			s.expectBoot(m, fmt.Sprintf("recovery power cycle %d", next.Attempts))
		}
	}, ev)
	if err != nil {
		s.log.Warn("recording a recovery power cycle", "machine", m.ID, "err", err)
	}
	s.log.Info("recovery power cycle", "machine", m.ID, "actor", actor, "bmc", bmc.Redact(addr))
	return true
}

// giveUp records that m is left alone.
func (s *Server) giveUp(ctx context.Context, m *store.Machine, c, next powerpolicy.Cycle) {
	lim := s.limits()
	var why, msg string
	if c.Reason == powerpolicy.CrashLoop {
		why = fmt.Sprintf("crash loop: still looping %s after %s, %d/%d power cycles spent", minutes(lim.Wait(c.Attempts)), lastCycle(c), c.Attempts, lim.Max)
		msg = fmt.Sprintf("left alone: still crash-looping (%d incomplete boot cycles in a row) after %d power cycles into PXE; no more power cycles until an operator acts (power, free, reinstall, or set the BMC)", m.Status.IncompleteCycles, c.Attempts)
	} else {
		why = fmt.Sprintf("no agent %s after %s, %d/%d power cycles spent", minutes(lim.Wait(c.Attempts)), lastCycle(c), c.Attempts, lim.Max)
		msg = fmt.Sprintf("left alone: no agent after the reset into PXE and %d power cycles into PXE; no more power cycles until an operator acts (power, free, reinstall, or set the BMC)", c.Attempts)
	}
	ev := &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_BMC, Actor: controllerActor(why), Message: msg}
	if err := s.recordEvent(ctx, m.ID, nil, ev); err != nil {
		s.log.Warn("recording a recovery give-up", "machine", m.ID, "err", err)
		return // tried again at the next sweep
	}
	s.cycles.swap(m.ID, c, next)
	s.log.Warn("machine left alone", "machine", m.ID, "why", why)
}

// powerCycle sets m's next boot to PXE and powers it off and on through
// its BMC, under the BMC's lock; it returns the unsealed address ("" when
// it cannot be unsealed) and the state afterwards.
func (s *Server) powerCycle(ctx context.Context, m *store.Machine) (string, bmc.Status, error) {
	var st bmc.Status
	addr, err := s.onBMC(ctx, m, func(drv bmc.Driver) error {
		if err := drv.SetNextBoot(ctx, bmc.BootPXE); err != nil {
			return err
		}
		if err := drv.PowerOff(ctx); err != nil {
			return err
		}
		if err := drv.PowerOn(ctx); err != nil {
			return err
		}
		var err error
		st, err = drv.Status(ctx)
		return err
	})
	return addr, st, err
}

// bmcMachines lists the machines that have a BMC, Light (without their
// inventories: the sweeps decide on state, power and last-seen, and
// decoding 10,000 inventories every minute cost seconds of CPU and
// hundreds of MB of garbage).
func (s *Server) bmcMachines(ctx context.Context) ([]*store.Machine, error) {
	var ms []*store.Machine
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		ms, err = tx.ListMachines(ctx, store.MachineFilter{WithBMC: true, Light: true})
		return err
	})
	return ms, err
}

// prune drops the in-memory BMC facts of machines that are gone or have
// no BMC.
func (s *Server) prune(ms []*store.Machine) {
	keep := make(map[string]bool, len(ms))
	for _, m := range ms {
		if m.BMC != "" {
			keep[m.ID] = true
		}
	}
	s.health.prune(keep)
	s.cycles.prune(keep)
}

// minutes shows a duration in whole minutes when it is one ("10 min"),
// else as Go does ("1.5s").
func minutes(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return d.String()
}
