package server

import (
	"context"
	"sync"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// powerCheck is what a machine's BMC said when its agent was silent.
type powerCheck struct {
	power bmc.PowerState
	at    time.Time
}

// powerChecks keeps the latest check per machine (derived facts: in
// memory, refreshed by CheckSilentMachines).
type powerChecks struct {
	mu sync.Mutex
	m  map[string]powerCheck
}

func (p *powerChecks) set(id string, c powerCheck) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]powerCheck{}
	}
	p.m[id] = c
}

func (p *powerChecks) get(id string) (powerCheck, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[id]
	return c, ok
}

// silent reports whether a machine should be talking to the controller but
// is not: dead, and not running an installed system (which never talks).
func silent(m *store.Machine, d lifecycle.Derived) bool {
	if d.Liveliness != anvilv1.Liveliness_LIVELINESS_DEAD {
		return false
	}
	switch m.Status.State {
	case anvilv1.MachineState_MACHINE_STATE_BOOTING, anvilv1.MachineState_MACHINE_STATE_PROVISIONED:
		return false
	}
	return true
}

// refine turns a dead machine's liveliness into OFF or HUNG when its BMC
// was asked after the machine was last seen.
func (s *Server) refine(m *store.Machine, l anvilv1.Liveliness) anvilv1.Liveliness {
	if l != anvilv1.Liveliness_LIVELINESS_DEAD {
		return l
	}
	c, ok := s.checks.get(m.ID)
	if !ok || !c.at.After(m.LastSeen) {
		return l
	}
	switch c.power {
	case bmc.PowerOff:
		return anvilv1.Liveliness_LIVELINESS_OFF
	case bmc.PowerOn:
		return anvilv1.Liveliness_LIVELINESS_HUNG
	}
	return l
}

// CheckSilentMachines asks the BMC of every silent machine (dead, not in
// its installed system) for its power state, a few BMCs at a time and each
// BMC alone (the per-BMC lock of the power API), so that the machine is
// reported Off or Hung rather than just Dead. A BMC that does not answer
// leaves the machine Dead; the error is logged. It returns how many BMCs
// answered.
func (s *Server) CheckSilentMachines(ctx context.Context) (int, error) {
	var ms []*store.Machine
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		ms, err = tx.ListMachines(ctx, store.MachineFilter{})
		return err
	}); err != nil {
		return 0, err
	}
	now := s.now()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for _, m := range ms {
		if m.BMC == "" || !silent(m, lifecycle.Derive(m.Status, m.LastSeen, now, s.cfg.Lifecycle)) {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			st, err := s.bmcStatus(ctx, m)
			if err != nil {
				s.log.Warn("silent machine: its BMC did not tell its power state", "machine", m.ID, "err", err)
				return
			}
			s.checks.set(m.ID, powerCheck{power: st.Power, at: s.now()})
			mu.Lock()
			answered++
			mu.Unlock()
		})
	}
	wg.Wait()
	return answered, ctx.Err()
}

// bmcStatus reads a machine's power state through its BMC, under the
// BMC's lock.
func (s *Server) bmcStatus(ctx context.Context, m *store.Machine) (bmc.Status, error) {
	addr, err := s.bmcSeal.Open(m.BMC)
	if err != nil {
		return bmc.Status{}, err
	}
	drv, err := s.openBMC(addr)
	if err != nil {
		return bmc.Status{}, err
	}
	unlock, err := s.bmcLocks.lock(ctx, addr)
	if err != nil {
		return bmc.Status{}, err
	}
	defer unlock()
	return drv.Status(ctx)
}
