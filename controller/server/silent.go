package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// powerCheck is what a machine's BMC said when its agent was silent.
type powerCheck struct {
	power bmc.PowerState
	at    time.Time
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
	if !ok || !c.at.After(s.seenAt(m)) {
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
// leaves the machine Dead; its failure is one BMC event per change of
// condition (noteBMC), and it is asked again only as its health allows: a
// BMC that refused the credentials not at all until its address is set
// again or an operator's power action through it succeeds, another failing
// BMC after waits doubling from BMCCheckInterval up to BMCBackoffMax. It
// returns how many BMCs answered.
func (s *Server) CheckSilentMachines(ctx context.Context) (int, error) {
	ms, err := s.bmcMachines(ctx)
	if err != nil {
		return 0, err
	}
	s.prune(ms)
	now := s.now()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	actor := controllerActor("checking the power state of a silent machine")
	for _, m := range ms {
		if m.BMC == "" || !silent(m, lifecycle.Derive(m.Status, s.seenAt(m), now, s.cfg.Lifecycle)) || !s.health.health(m.ID, m.BMC).MayAsk(now) {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			addr, st, err := s.bmcStatus(ctx, m)
			s.noteBMC(ctx, m, addr, err, actor)
			if err != nil {
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

// errUnsealable: a stored BMC address the controller's key cannot open.
var errUnsealable = errors.New("the BMC address cannot be unsealed (was the controller's keys/bmc.key replaced?); set it again")

// onBMC unseals m's BMC address, opens its driver and runs fn with it
// under the BMC's lock (operations on one BMC are serialized: BMCs choke
// on parallel sessions). It returns the unsealed address, "" when it
// cannot be unsealed (the error then wraps errUnsealable).
//
// A machine whose in-band BMC password was just changed keeps its previous
// address (Trust.BMCPrevious) until one of them answers: when the BMC
// refuses the new credentials, fn runs again with the previous ones (a
// refused login changed nothing), and the one that answers becomes the
// machine's only BMC address.
func (s *Server) onBMC(ctx context.Context, m *store.Machine, fn func(bmc.Driver) error) (string, error) {
	addr, err := s.onBMCAt(ctx, m.ID, m.BMC, fn)
	switch {
	case m.Trust.BMCPrevious == "":
	case err == nil:
		s.settleBMC(ctx, m.ID, m.BMC, m.BMC)
	case errors.Is(err, bmc.ErrAuth):
		prev, perr := s.onBMCAt(ctx, m.ID, m.Trust.BMCPrevious, fn)
		if perr == nil {
			s.settleBMC(ctx, m.ID, m.BMC, m.Trust.BMCPrevious)
			return prev, nil
		}
	}
	return addr, err
}

// settleBMC makes keep machine id's only BMC address if its address is
// still stored (an operator or a new enrollment may have changed it
// meanwhile), with a BMC event when the new in-band credential never
// reached the BMC.
func (s *Server) settleBMC(ctx context.Context, id, stored, keep string) {
	err := s.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, id)
		if err != nil || m.BMC != stored || m.Trust.BMCPrevious == "" {
			return err
		}
		m.BMC, m.Trust.BMCPrevious = keep, ""
		if keep == stored {
			return tx.UpdateMachine(ctx, m)
		}
		return s.record(ctx, tx, fx, m, false, &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_BMC,
			Actor: controllerActor("in-band enrollment"), Message: "the BMC refused the new in-band password (the agent did not set it) and took the previous one: the controller keeps using that"})
	})
	if err != nil {
		s.log.Warn("settling the BMC credential", "machine", id, "err", err)
	}
}

// onBMCAt runs fn on the BMC at the sealed address stored.
func (s *Server) onBMCAt(ctx context.Context, id, stored string, fn func(bmc.Driver) error) (string, error) {
	addr, err := s.bmcSeal.Open(stored)
	if err != nil {
		return "", fmt.Errorf("%s: %w (%v)", id, errUnsealable, err)
	}
	drv, err := s.openBMC(addr)
	if err != nil {
		return addr, err
	}
	unlock, err := s.bmcLocks.lock(ctx, addr)
	if err != nil {
		return addr, fmt.Errorf("waiting for the BMC: %w", err)
	}
	defer unlock()
	return addr, fn(drv)
}

// bmcStatus reads a machine's power state through its BMC (onBMC).
func (s *Server) bmcStatus(ctx context.Context, m *store.Machine) (string, bmc.Status, error) {
	var st bmc.Status
	addr, err := s.onBMC(ctx, m, func(drv bmc.Driver) (err error) {
		st, err = drv.Status(ctx)
		return err
	})
	return addr, st, err
}
