package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/sizes"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

type machineAPI struct {
	anvilv1.UnimplementedMachineServiceServer
	*Server
}

var _ anvilv1.MachineServiceServer = (*machineAPI)(nil)

// toProto renders a stored machine with its time-derived facts.
func (s *Server) toProto(m *store.Machine) *anvilv1.Machine {
	d := lifecycle.Derive(m.Status, s.seenAt(m), s.now(), s.cfg.Lifecycle)
	pm := &anvilv1.Machine{
		Id:            m.ID,
		Uuid:          m.UUID,
		Macs:          m.MACs,
		State:         m.Status.State,
		FailureReason: m.Status.FailureReason,
		Liveliness:    s.refine(m, d.Liveliness),
		CrashLoop:     m.Status.CrashLoop,
		FailedReclaim: d.FailedReclaim,
		SizeId:        m.SizeID,
		Allocation:    m.Allocation,
		Inventory:     m.Inventory,
		Labels:        m.Labels,
		Progress:      m.Progress,
		BmcAddress:    s.shownBMC(m.BMC),
		BmcSource:     bmcSource(m),
	}
	if m.Trust.Held {
		// Whatever happened since (a reinstall, a free), the session has
		// not been approved.
		pm.State = anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL
	}
	obs, _ := s.bootObs.For(m.UUID, m.MACs, time.Time{})
	for _, o := range obs {
		pm.BootObservations = append(pm.BootObservations, &anvilv1.BootObservation{
			Time: timestamppb.New(o.Time), ClientAddress: o.Client, Mac: o.MAC, Platform: o.Platform, Served: o.Served})
	}
	if !m.CreatedAt.IsZero() {
		pm.CreatedAt = timestamppb.New(m.CreatedAt)
	}
	if seen := s.seenAt(m); !seen.IsZero() {
		pm.LastSeen = timestamppb.New(seen)
	}
	if m.Status.LastEvent != anvilv1.EventType_EVENT_TYPE_UNSPECIFIED {
		pm.LastEvent = &anvilv1.Event{MachineId: m.ID, Type: m.Status.LastEvent, Time: timestamppb.New(m.Status.LastEventTime)}
	}
	return pm
}

// bmcSource says where the machine's BMC address came from.
func bmcSource(m *store.Machine) string {
	switch {
	case m.BMC == "":
		return ""
	case m.Trust.BMCInBand:
		return "in-band"
	}
	return "operator"
}

// shownBMC is a stored (sealed) BMC address as the API shows it: without
// its password.
func (s *Server) shownBMC(stored string) string {
	addr, err := s.bmcSeal.Open(stored)
	if err != nil {
		return "(sealed with another key: set the BMC again)"
	}
	return bmc.Redact(addr)
}

func (s *Server) getMachine(ctx context.Context, id string) (*store.Machine, error) {
	var m *store.Machine
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		m, err = tx.GetMachine(ctx, id)
		return err
	})
	return m, err
}

func (a *machineAPI) ListMachines(ctx context.Context, req *anvilv1.ListMachinesRequest) (*anvilv1.ListMachinesResponse, error) {
	f := store.MachineFilter{State: req.GetState(), SizeID: req.GetSizeId(), Hostname: req.GetHostname(), Labels: req.GetLabels()}
	if req.Allocated != nil {
		v := req.GetAllocated()
		f.Allocated = &v
	}
	var ms []*store.Machine
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		ms, err = tx.ListMachines(ctx, f)
		return err
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("list machines: %w", err))
	}
	resp := &anvilv1.ListMachinesResponse{}
	for _, m := range ms {
		pm := a.toProto(m)
		if req.GetLiveliness() != anvilv1.Liveliness_LIVELINESS_UNSPECIFIED && pm.Liveliness != req.GetLiveliness() {
			continue
		}
		resp.Machines = append(resp.Machines, pm)
	}
	return resp, nil
}

func (a *machineAPI) GetMachine(ctx context.Context, req *anvilv1.GetMachineRequest) (*anvilv1.Machine, error) {
	m, err := a.getMachine(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return a.toProto(m), nil
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// allocatable explains why m cannot be allocated, or returns nil.
func allocatable(m *store.Machine) error {
	if m.Allocation != nil {
		return status.Errorf(codes.FailedPrecondition, "machine %s is busy: allocated to %q since %s", m.ID, m.Allocation.GetHostname(), m.Allocation.GetAllocatedAt().AsTime().Format("2006-01-02 15:04:05"))
	}
	if m.Status.State != anvilv1.MachineState_MACHINE_STATE_READY || m.Trust.Held {
		return status.Errorf(codes.FailedPrecondition, "machine %s is not ready: it is %s", m.ID, stateName(m.Status.State))
	}
	return nil
}

// targetDisk checks the requested disk (by path, serial or WWN; kept as
// given, since a serial survives the reboots that may rename /dev/sdX), or
// picks the first non-removable physical disk by path (sizes.TargetDisk).
func targetDisk(m *store.Machine, want string) (string, error) {
	disk, err := sizes.TargetDisk(m.Inventory, want)
	if err != nil {
		code := codes.InvalidArgument
		if want == "" {
			code = codes.FailedPrecondition
		}
		return "", status.Errorf(code, "machine %s: %v", m.ID, err)
	}
	return disk, nil
}

// AllocateMachine reserves one Ready machine and queues its Install.
func (a *machineAPI) AllocateMachine(ctx context.Context, req *anvilv1.AllocateMachineRequest) (*anvilv1.Machine, error) {
	var out *store.Machine
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		img, err := tx.GetImage(ctx, req.GetImageId())
		if err != nil {
			return err
		}
		m, err := a.pick(ctx, tx, req)
		if err != nil {
			return err
		}
		disk, err := targetDisk(m, req.GetTargetDisk())
		if err != nil {
			return err
		}
		al := &anvilv1.Allocation{
			ImageId:            img.GetId(),
			Hostname:           req.GetHostname(),
			SshPublicKeys:      req.GetSshPublicKeys(),
			UserData:           req.GetUserData(),
			TargetDisk:         disk,
			ExtraKernelCmdline: req.GetExtraKernelCmdline(),
			AllocatedAt:        timestamppb.New(a.now()),
		}
		if al.Hostname == "" {
			al.Hostname = m.ID
		}
		m.Allocation = al
		ev := &anvilv1.Event{Time: timestamppb.New(a.now()), Type: anvilv1.EventType_EVENT_TYPE_ALLOCATED, Actor: operatorActor(ctx),
			Message: fmt.Sprintf("allocated as %s with image %s onto %s", al.Hostname, img.GetId(), disk)}
		if err := a.record(ctx, tx, fx, m, false, ev); err != nil {
			return err
		}
		out = m
		in, err := a.installFor(m, img, al)
		if err != nil {
			return err
		}
		return a.queue(ctx, tx, fx, m, in)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("allocate: %w", err))
	}
	return a.toProto(out), nil
}

// pick returns the requested machine, or the first allocatable machine of
// the size and selector (alive ones first, then by id).
func (a *machineAPI) pick(ctx context.Context, tx store.Tx, req *anvilv1.AllocateMachineRequest) (*store.Machine, error) {
	if id := req.GetMachineId(); id != "" {
		m, err := tx.GetMachine(ctx, id)
		if err != nil {
			return nil, err
		}
		return m, allocatable(m)
	}
	no := false
	ms, err := tx.ListMachines(ctx, store.MachineFilter{State: anvilv1.MachineState_MACHINE_STATE_READY, SizeID: req.GetSizeId(), Allocated: &no})
	if err != nil {
		return nil, err
	}
	var best *store.Machine
	bestAlive := false
	for _, m := range ms {
		if !labelsMatch(m.Labels, req.GetSelector()) || allocatable(m) != nil {
			continue
		}
		alive := lifecycle.Derive(m.Status, a.seenAt(m), a.now(), a.cfg.Lifecycle).Liveliness == anvilv1.Liveliness_LIVELINESS_ALIVE
		if best == nil || (alive && !bestAlive) {
			best, bestAlive = m, alive
		}
	}
	if best == nil {
		return nil, status.Errorf(codes.ResourceExhausted, "no ready machine matches size %q and selector %v", req.GetSizeId(), req.GetSelector())
	}
	return best, nil
}

// FreeMachine releases the allocation (or a failed machine), cancels what
// was pending and queues the erase that brings the machine back to Ready.
func (a *machineAPI) FreeMachine(ctx context.Context, req *anvilv1.FreeMachineRequest) (*anvilv1.Machine, error) {
	mode := req.GetEraseMode()
	if mode == anvilv1.EraseMode_ERASE_MODE_UNSPECIFIED {
		mode = a.cfg.FreeEraseMode
	}
	var out *store.Machine
	var osRunning bool
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		if m.Allocation == nil && m.Status.State != anvilv1.MachineState_MACHINE_STATE_FAILED {
			return status.Errorf(codes.FailedPrecondition, "machine %s is not allocated (it is %s)", m.ID, stateName(m.Status.State))
		}
		if err := tx.CancelPending(ctx, m.ID, a.now()); err != nil {
			return err
		}
		osRunning = m.Status.Installed
		m.Allocation = nil
		m.Progress = nil
		wipe := &anvilv1.Instruction{Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: mode, AllowFallback: a.cfg.EraseFallback}}}
		if err := a.queue(ctx, tx, fx, m, wipe); err != nil {
			return err
		}
		// The RECLAIM event names its erase, so an erase cut short by a
		// power loss is queued again with the same mode (requeueInterrupted).
		ev := &anvilv1.Event{Time: timestamppb.New(a.now()), Type: anvilv1.EventType_EVENT_TYPE_RECLAIM, Actor: operatorActor(ctx),
			Message: "freed; erase mode " + mode.String(), InstructionId: wipe.GetId()}
		if err := a.record(ctx, tx, fx, m, false, ev); err != nil {
			return err
		}
		out = m
		return nil
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("free %s: %w", req.GetId(), err))
	}
	if err := a.rebootIntoAgent(ctx, out, osRunning, "free"); err != nil {
		return nil, err
	}
	return a.toProto(out), nil
}

// ReinstallMachine queues a new Install for an allocated machine.
func (a *machineAPI) ReinstallMachine(ctx context.Context, req *anvilv1.ReinstallMachineRequest) (*anvilv1.Machine, error) {
	var out *store.Machine
	var osRunning bool
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		if m.Allocation == nil {
			return status.Errorf(codes.FailedPrecondition, "machine %s is not allocated; allocate it instead", m.ID)
		}
		imgID := req.GetImageId()
		if imgID == "" {
			imgID = m.Allocation.GetImageId()
		}
		img, err := tx.GetImage(ctx, imgID)
		if err != nil {
			return err
		}
		if err := tx.CancelPending(ctx, m.ID, a.now()); err != nil {
			return err
		}
		osRunning = m.Status.Installed
		m.Allocation.ImageId = img.GetId()
		m.Progress = nil
		ev := &anvilv1.Event{Time: timestamppb.New(a.now()), Type: anvilv1.EventType_EVENT_TYPE_REINSTALL, Actor: operatorActor(ctx),
			Message: "reinstall with image " + img.GetId()}
		if err := a.record(ctx, tx, fx, m, false, ev); err != nil {
			return err
		}
		out = m
		in, err := a.installFor(m, img, m.Allocation)
		if err != nil {
			return err
		}
		return a.queue(ctx, tx, fx, m, in)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("reinstall %s: %w", req.GetId(), err))
	}
	if err := a.rebootIntoAgent(ctx, out, osRunning, "reinstall"); err != nil {
		return nil, err
	}
	return a.toProto(out), nil
}

// ApproveMachine trusts the machine's current agent session: the
// inventory it registered with is taken, and the machine goes on as a
// trusted registration would (Ready, its allocation's install, or the
// erase of a reclaim).
func (a *machineAPI) ApproveMachine(ctx context.Context, req *anvilv1.ApproveMachineRequest) (*anvilv1.Machine, error) {
	var out *store.Machine
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		if !m.Trust.Held {
			return status.Errorf(codes.FailedPrecondition, "machine %s awaits no approval: it is %s", m.ID, stateName(m.Status.State))
		}
		m.Trust.Held = false
		before := m.Status
		if m.HeldInventory != nil {
			agent := &agentAPI{Server: a.Server}
			if err := agent.setInventory(ctx, tx, m, m.HeldInventory); err != nil {
				return err
			}
			m.HeldInventory = nil
		}
		ev := &anvilv1.Event{Time: timestamppb.New(a.now()), Type: anvilv1.EventType_EVENT_TYPE_APPROVED, Actor: operatorActor(ctx),
			Message: fmt.Sprintf("an operator approved the agent session registered from %s", orUnknown(m.Trust.SessionAddr))}
		if err := a.record(ctx, tx, fx, m, false, ev); err != nil {
			return err
		}
		fx.notify = append(fx.notify, m.ID)
		out = m
		if err := (&agentAPI{Server: a.Server}).resume(ctx, tx, fx, m, before); err != nil {
			return err
		}
		// Nothing queued: the agent waits on its stream (as openWait
		// records for a fresh registration).
		pending, err := tx.PendingInstructions(ctx, m.ID)
		if err != nil || len(pending) > 0 {
			return err
		}
		return a.record(ctx, tx, fx, m, false, &anvilv1.Event{Time: timestamppb.New(a.now()), Type: anvilv1.EventType_EVENT_TYPE_WAITING, Message: "agent waiting for instructions"})
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("approve %s: %w", req.GetId(), err))
	}
	return a.toProto(out), nil
}

// DeleteMachine forgets an unallocated machine; its agent must register
// again.
func (a *machineAPI) DeleteMachine(ctx context.Context, req *anvilv1.DeleteMachineRequest) (*anvilv1.DeleteMachineResponse, error) {
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		if m.Allocation != nil {
			return status.Errorf(codes.FailedPrecondition, "machine %s is allocated to %q; free it first", m.ID, m.Allocation.GetHostname())
		}
		fx.notify = append(fx.notify, m.ID) // its Wait streams end
		return tx.DeleteMachine(ctx, m.ID)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("delete %s: %w", req.GetId(), err))
	}
	return &anvilv1.DeleteMachineResponse{}, nil
}

func (a *machineAPI) SetMachineLabels(ctx context.Context, req *anvilv1.SetMachineLabelsRequest) (*anvilv1.Machine, error) {
	var out *store.Machine
	err := a.commit(ctx, func(tx store.Tx, _ *effects) error {
		m, err := tx.GetMachine(ctx, req.GetId())
		if err != nil {
			return err
		}
		m.Labels = maps.Clone(req.GetLabels())
		out = m
		return tx.UpdateMachine(ctx, m)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("label %s: %w", req.GetId(), err))
	}
	return a.toProto(out), nil
}

func (a *machineAPI) ListEvents(ctx context.Context, req *anvilv1.ListEventsRequest) (*anvilv1.ListEventsResponse, error) {
	var evs []*anvilv1.Event
	err := a.store.View(ctx, func(tx store.Tx) error {
		if _, err := tx.GetMachine(ctx, req.GetMachineId()); err != nil {
			return err
		}
		var err error
		if req.GetLimit() > 0 {
			evs, err = tx.LastEvents(ctx, req.GetMachineId(), int(req.GetLimit()))
			slices.Reverse(evs)
		} else {
			evs, err = tx.ListEvents(ctx, req.GetMachineId(), 0, 0)
		}
		return err
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("events of %s: %w", req.GetMachineId(), err))
	}
	return &anvilv1.ListEventsResponse{Events: evs}, nil
}

// WatchEvents replays stored events after after_seq, then follows the hub.
// A persisted event from the hub only triggers another replay from the
// store, so events committed concurrently are sent in seq order without gaps.
// Live progress updates (seq 0) are forwarded as they come. A watcher that
// falls behind is ended with ResourceExhausted; it resumes from its last seq.
func (a *machineAPI) WatchEvents(req *anvilv1.WatchEventsRequest, stream anvilv1.MachineService_WatchEventsServer) error {
	ctx := stream.Context()
	w := a.hub.Watch(req.GetMachineId(), a.cfg.WatchBuffer) // before replay: nothing falls in between
	defer w.Close()
	last := req.GetAfterSeq()
	replay := func() error {
		for {
			var evs []*anvilv1.Event
			err := a.store.View(ctx, func(tx store.Tx) error {
				var err error
				evs, err = tx.ListEvents(ctx, req.GetMachineId(), last, 1000)
				return err
			})
			if err != nil {
				return toStatus(err)
			}
			for _, e := range evs {
				if err := stream.Send(e); err != nil {
					return err
				}
				last = e.GetSeq()
			}
			if len(evs) < 1000 {
				return nil
			}
		}
	}
	if err := replay(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Overflow():
			return status.Errorf(codes.ResourceExhausted, "watcher fell behind; resume with after_seq=%d", last)
		case e := <-w.C():
			var err error
			switch {
			case e.GetSeq() == 0:
				err = stream.Send(e)
			case e.GetSeq() > last:
				err = replay()
			}
			if err != nil {
				return err
			}
		}
	}
}

// rebootIntoAgent resets a machine whose installed OS is running into the
// agent (next boot PXE) through its BMC, so the queued erase or install
// reaches it; the POWER event's actor is the controller, on the operator's
// behalf. The reset begins a recovery watch (RecoverMachines): no agent
// within BootDeadline, and the machine is power-cycled again. A machine
// running the agent already gets the instruction on its Wait stream.
// Without a BMC the operator must reboot it; a BMC that fails is an error
// saying so (the free or reinstall itself is recorded).
func (a *machineAPI) rebootIntoAgent(ctx context.Context, m *store.Machine, osRunning bool, what string) error {
	a.cycles.forget(m.ID) // the operator acted
	if !osRunning || m.BMC == "" {
		return nil
	}
	actor := controllerActor(what + " asked by " + operatorActor(ctx))
	if _, err := a.power(ctx, &anvilv1.PowerMachineRequest{Id: m.ID, Action: anvilv1.PowerAction_POWER_ACTION_RESET, NextBoot: anvilv1.BootDevice_BOOT_DEVICE_PXE}, actor); err != nil {
		st, _ := status.FromError(err)
		return status.Errorf(st.Code(), "%s %s: recorded, but resetting it into the agent failed: %s; reboot it into the agent by hand", what, m.ID, st.Message())
	}
	a.cycles.arm(m.ID, a.now())
	return nil
}

// WaitStreams is how many agent Wait streams are open (metrics).
func (s *Server) WaitStreams() int { return s.streams.open() }

// MachinesByState counts the machines per state (metrics): one counting
// query, whatever the fleet's size (the machines are not read).
func (s *Server) MachinesByState(ctx context.Context) (map[anvilv1.MachineState]int, error) {
	var out map[anvilv1.MachineState]int
	err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.CountMachinesByState(ctx)
		return err
	})
	return out, err
}
