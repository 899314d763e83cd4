package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// SetMachineBMC stores the machine's BMC address after checking that a
// driver exists for it; an empty address clears it. What the controller
// knew of the previous BMC's health is forgotten.
func (a *machineAPI) SetMachineBMC(ctx context.Context, req *anvilv1.SetMachineBMCRequest) (*anvilv1.Machine, error) {
	addr := req.GetAddress()
	if addr != "" {
		parsed, err := bmc.ParseAddress(addr)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "set BMC of %s: %v", req.GetId(), err)
		}
		// Kept with its credentials, sealed with the controller's BMC key.
		if addr, err = a.bmcSeal.Seal(parsed.Full()); err != nil {
			return nil, toStatus(fmt.Errorf("set BMC of %s: %w", req.GetId(), err))
		}
	}
	var out *store.Machine
	err := a.commit(ctx, func(tx store.Tx, _ *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		m.BMC = addr
		m.Trust.BMCInBand, m.Trust.BMCPrevious = false, "" // the operator's address wins over an in-band one
		out = m
		return tx.UpdateMachine(ctx, m)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("set BMC of %s: %w", req.GetId(), err))
	}
	// Another BMC (or the same, set again: the operator asks to try it
	// again): its health starts over, and recovery power cycles stop.
	a.health.forget(out.ID)
	a.cycles.forget(out.ID)
	return a.toProto(out), nil
}

// PowerMachine runs an operator's power action (see power); it stops the
// controller's recovery power cycles of the machine (the operator acts).
func (a *machineAPI) PowerMachine(ctx context.Context, req *anvilv1.PowerMachineRequest) (*anvilv1.PowerMachineResponse, error) {
	if req.GetAction() != anvilv1.PowerAction_POWER_ACTION_STATUS {
		a.cycles.forget(req.GetId())
	}
	return a.power(ctx, req, operatorActor(ctx))
}

// actorKind is "operator" or "the controller", as an event message says
// who acted (the actor field says exactly who).
func actorKind(actor string) string {
	if strings.HasPrefix(actor, "controller") {
		return "the controller"
	}
	return "operator"
}

// power runs the power action on the machine's BMC, outside any
// transaction (a BMC may take seconds), then records a POWER event by
// actor for ON, OFF and RESET. Operations on one BMC are serialized. The
// outcome goes into the BMC's health (noteBMC): a failure is one BMC event
// per change of condition, and a success lifts a wrong-credentials stop.
func (s *Server) power(ctx context.Context, req *anvilv1.PowerMachineRequest, actor string) (*anvilv1.PowerMachineResponse, error) {
	id, action, next := req.GetId(), req.GetAction(), req.GetNextBoot()
	what := "power " + actionName(action)
	if next != anvilv1.BootDevice_BOOT_DEVICE_UNSPECIFIED {
		what += " (next boot " + bootName(next) + ")"
	}
	m, err := s.getMachine(ctx, id)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%s %s: %w", what, id, err))
	}
	if m.BMC == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %s: the machine has no BMC; set one with SetMachineBMC (anvilctl machine bmc %s ipmi://user:password@host)", what, id, id)
	}
	if _, ok := anvilv1.PowerAction_name[int32(action)]; !ok || action == anvilv1.PowerAction_POWER_ACTION_UNSPECIFIED {
		return nil, status.Errorf(codes.InvalidArgument, "%s %s: unknown power action %v", what, id, action)
	}
	var st bmc.Status
	addr, err := s.onBMC(ctx, m, func(drv bmc.Driver) (err error) {
		st, err = runPower(ctx, drv, action, next)
		return err
	})
	if errors.Is(err, errUnsealable) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %s", what, err)
	}
	s.noteBMC(ctx, m, addr, err, actor)
	if err != nil {
		return nil, bmcStatus(scrubbedError{msg: fmt.Sprintf("%s %s: %s", what, id, scrub(err, addr)), err: err})
	}
	resp := &anvilv1.PowerMachineResponse{MachineId: id, State: powerState(st.Power), NextBoot: bootDevice(st.NextBoot), Detail: st.Detail}
	if action == anvilv1.PowerAction_POWER_ACTION_STATUS {
		return resp, nil
	}
	ev := &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_POWER, Actor: actor,
		Message: fmt.Sprintf("%s by %s through %s: now %s", what, actorKind(actor), bmc.Redact(addr), st.Power)}
	err = s.recordEvent(ctx, id, func(m *store.Machine, fx *effects) {
		if action == anvilv1.PowerAction_POWER_ACTION_OFF || action == anvilv1.PowerAction_POWER_ACTION_RESET {
			// The power was cut: the agent session, if any, died with it.
			// Its credential goes, so it no longer counts as live and the
			// boot that follows registers at once.
			m.CredentialHash = nil
			fx.notify = append(fx.notify, m.ID)
		}
	}, ev)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%s %s: done (now %s), but recording the event failed: %w", what, id, st.Power, err))
	}
	resp.Event = ev
	return resp, nil
}

// scrubbedError is a BMC error whose text had the password masked
// (scrub); errors.Is still sees the BMC's sentinel.
type scrubbedError struct {
	msg string
	err error
}

func (e scrubbedError) Error() string { return e.msg }
func (e scrubbedError) Unwrap() error { return e.err }

// runPower sets the next boot device, runs the action and reads the state.
func runPower(ctx context.Context, drv bmc.Driver, action anvilv1.PowerAction, next anvilv1.BootDevice) (bmc.Status, error) {
	switch next {
	case anvilv1.BootDevice_BOOT_DEVICE_PXE:
		if err := drv.SetNextBoot(ctx, bmc.BootPXE); err != nil {
			return bmc.Status{}, err
		}
	case anvilv1.BootDevice_BOOT_DEVICE_DISK:
		if err := drv.SetNextBoot(ctx, bmc.BootDisk); err != nil {
			return bmc.Status{}, err
		}
	}
	var err error
	switch action {
	case anvilv1.PowerAction_POWER_ACTION_ON:
		err = drv.PowerOn(ctx)
	case anvilv1.PowerAction_POWER_ACTION_OFF:
		err = drv.PowerOff(ctx)
	case anvilv1.PowerAction_POWER_ACTION_RESET:
		err = drv.Reset(ctx)
	case anvilv1.PowerAction_POWER_ACTION_STATUS:
	default:
		return bmc.Status{}, status.Errorf(codes.InvalidArgument, "unknown power action %v", action)
	}
	if err != nil {
		return bmc.Status{}, err
	}
	return drv.Status(ctx)
}

// bmcStatus maps BMC errors to gRPC statuses: a BMC that cannot be reached
// or answers garbage is Unavailable, one that refuses (or an unsupported
// type) FailedPrecondition.
func bmcStatus(err error) error {
	switch {
	case errors.Is(err, bmc.ErrUnreachable), errors.Is(err, bmc.ErrProtocol):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, bmc.ErrRefused), errors.Is(err, bmc.ErrAuth), errors.Is(err, bmc.ErrUnsupported), errors.Is(err, bmc.ErrInvalidAddress):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return toStatus(err)
}

func actionName(a anvilv1.PowerAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "POWER_ACTION_"))
}

func bootName(b anvilv1.BootDevice) string {
	return strings.ToLower(strings.TrimPrefix(b.String(), "BOOT_DEVICE_"))
}

func powerState(p bmc.PowerState) anvilv1.PowerState {
	switch p {
	case bmc.PowerOn:
		return anvilv1.PowerState_POWER_STATE_ON
	case bmc.PowerOff:
		return anvilv1.PowerState_POWER_STATE_OFF
	}
	return anvilv1.PowerState_POWER_STATE_UNSPECIFIED
}

func bootDevice(b bmc.BootDevice) anvilv1.BootDevice {
	switch b {
	case bmc.BootPXE:
		return anvilv1.BootDevice_BOOT_DEVICE_PXE
	case bmc.BootDisk:
		return anvilv1.BootDevice_BOOT_DEVICE_DISK
	}
	return anvilv1.BootDevice_BOOT_DEVICE_UNSPECIFIED
}

// keyedLocks is a set of mutexes by key whose Lock honours a context.
type keyedLocks struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// lock waits until key is free or ctx ends; unlock frees it.
func (l *keyedLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		l.mu.Lock()
		busy, ok := l.held[key]
		if !ok {
			if l.held == nil {
				l.held = map[string]chan struct{}{}
			}
			done := make(chan struct{})
			l.held[key] = done
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				delete(l.held, key)
				l.mu.Unlock()
				close(done)
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
