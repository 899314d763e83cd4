package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/sizes"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

type agentAPI struct {
	anvilv1.UnimplementedAgentServiceServer
	*Server
}

var _ anvilv1.AgentServiceServer = (*agentAPI)(nil)

func macsOf(inv *anvilv1.Inventory) []string {
	var macs []string
	for _, n := range inv.GetNics() {
		if n.GetMac() != "" && !n.GetVirtual() {
			macs = append(macs, strings.ToLower(n.GetMac()))
		}
	}
	return macs
}

func (a *agentAPI) event(t anvilv1.EventType, msg string) *anvilv1.Event {
	return &anvilv1.Event{Time: timestamppb.New(a.now()), Type: t, Message: msg}
}

// Register creates or refreshes the machine keyed by its SMBIOS UUID and
// hands out a new credential (the previous one stops working), as far as
// the registration policy (controller/trust) lets this registration take
// the machine. A refused attempt is recorded as a SECURITY event of the
// machine it named and answered PermissionDenied; nothing else changes.
func (a *agentAPI) Register(ctx context.Context, req *anvilv1.RegisterRequest) (*anvilv1.RegisterResponse, error) {
	inv := req.GetInventory()
	uuid := inv.GetProduct().GetUuid()
	reg, ok := registrarFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "register without a boot token or credential")
	}
	from := peerHost(ctx)
	cred, err := pki.NewToken()
	if err != nil {
		return nil, toStatus(fmt.Errorf("register %s: %w", uuid, err))
	}
	var id string
	var refused error
	var enroll *anvilv1.BMCCredential
	err = a.commit(ctx, func(tx store.Tx, fx *effects) error {
		refused, enroll = nil, nil
		m, err := tx.GetMachineByUUID(ctx, uuid)
		known := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if why := a.checkRegistrar(reg, inv, from, m); why != "" {
			refused = status.Errorf(codes.PermissionDenied, "register %s from %s: %s", uuid, from, why)
			return a.securityEvent(ctx, tx, fx, m, fmt.Sprintf("registration from %s refused: %s", from, why))
		}
		var v trust.Verdict
		if known {
			v = trust.Decide(trust.Registration{
				Kind:           reg.kind,
				Known:          true,
				Live:           len(m.CredentialHash) > 0 && a.now().Sub(a.seenAt(m)) < a.cfg.LiveWindow,
				Expected:       a.now().Before(m.Trust.ExpectBootUntil) && (reg.kind != trust.BootToken || reg.minted.After(m.Trust.ExpectBootSince)),
				ExpectWhy:      m.Trust.ExpectBootWhy,
				SecretsPending: m.Allocation != nil && !m.Status.Installed,
				Held:           m.Trust.Held,
			}, a.cfg.EnrollPolicy)
		} else {
			v = trust.Decide(trust.Registration{Kind: reg.kind}, a.cfg.EnrollPolicy)
			m = &store.Machine{ID: uuid, UUID: uuid, CreatedAt: a.now()}
		}
		if !v.Accept {
			refused = status.Errorf(codes.PermissionDenied, "register %s from %s: %s", uuid, from, v.Reason)
			return a.securityEvent(ctx, tx, fx, m, fmt.Sprintf("registration from %s (MACs %s) refused: %s; the live session registered from %s with MACs %s",
				from, strings.Join(macsOf(inv), ","), v.Reason, orUnknown(m.Trust.SessionAddr), strings.Join(m.MACs, ",")))
		}
		before := m.Status
		if reg.kind == trust.BootToken {
			m.Trust.BootTokensBefore = reg.minted // single use: this and older tokens are spent
		}
		if reg.kind != trust.Credential {
			m.Trust.ExpectBootUntil, m.Trust.ExpectBootSince, m.Trust.ExpectBootWhy = time.Time{}, time.Time{}, ""
		}
		if m.Trust.ATAPassword == "" {
			if m.Trust.ATAPassword, err = newSecret(); err != nil {
				return err
			}
		}
		m.Trust.SessionAddr = from
		m.Trust.Held = !v.Trusted
		m.CredentialHash = pki.HashToken(cred)
		m.LastSeen = a.now()
		m.Progress = nil
		msg := fmt.Sprintf("agent %s registered from %s: %d cores, %d MiB memory, %d disks, %d NICs; %s%s",
			req.GetAgentVersion(), from, inv.GetCpu().GetCores(), inv.GetMemory().GetTotalBytes()>>20,
			len(inv.GetDisks()), len(inv.GetNics()), v.Reason, a.observed(uuid, macsOf(inv), reg.addr))
		id = m.ID
		fx.notify = append(fx.notify, m.ID) // streams of a superseded credential end
		if !v.Trusted {
			if known {
				m.HeldInventory = inv // the trusted inventory stays until approval
			} else {
				if err := a.setInventory(ctx, tx, m, inv); err != nil {
					return err
				}
			}
			ev := a.event(anvilv1.EventType_EVENT_TYPE_HELD, msg) // before the BMC event: in time order
			_, bmcEv, err := a.enrollBMC(m, inv, reg.kind)        // says why not
			if err != nil {
				return err
			}
			return a.record(ctx, tx, fx, m, !known, withEvent(ev, bmcEv)...)
		}
		if err := a.setInventory(ctx, tx, m, inv); err != nil {
			return err
		}
		m.HeldInventory = nil
		ev := a.event(anvilv1.EventType_EVENT_TYPE_REGISTERING, msg) // before the BMC event: in time order
		var bmcEv *anvilv1.Event
		if enroll, bmcEv, err = a.enrollBMC(m, inv, reg.kind); err != nil {
			return err
		}
		// One write of the machine and its 20 KB inventory for both events.
		if err := a.record(ctx, tx, fx, m, !known, withEvent(ev, bmcEv)...); err != nil {
			return err
		}
		return a.resume(ctx, tx, fx, m, before)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("register %s: %w", uuid, err))
	}
	a.fresh.set(id, struct{}{}) // its first Wait stream opens in one transaction
	return &anvilv1.RegisterResponse{MachineId: id, Credential: cred, HeartbeatInterval: durationpb.New(a.cfg.HeartbeatInterval), BmcEnrollment: enroll}, nil
}

// enrollBMC decides whether this registration's agent enrolls the
// machine's BMC in-band (trust.DecideBMC). If so, it makes a password,
// sets the new address (sealed) as m's BMC, keeping the previous in-band
// address as a fallback until the new one answers (onBMC), and returns
// the credential for the agent; the caller records m in the registration's
// transaction, so an enrollment that never reaches the BMC loses nothing.
// The returned BMC event (nil when none) says what was decided, and why
// not when an operator should see it. Neither the password nor the address with it appears in
// an event or a log.
func (a *agentAPI) enrollBMC(m *store.Machine, inv *anvilv1.Inventory, kind trust.Kind) (*anvilv1.BMCCredential, *anvilv1.Event, error) {
	ib := inv.GetBmc()
	v := trust.DecideBMC(trust.BMCReport{Found: ib != nil && ib.GetChannel() != 0, FreshBoot: kind != trust.Credential, Held: m.Trust.Held,
		OperatorSet: m.BMC != "" && !m.Trust.BMCInBand, IP: ib.GetIp()}, a.cfg.BMCEnroll)
	if !v.Enroll {
		if v.Tell {
			return nil, a.event(anvilv1.EventType_EVENT_TYPE_BMC, fmt.Sprintf("in-band BMC at %q not enrolled: %s", ib.GetIp(), v.Reason)), nil
		}
		return nil, nil, nil
	}
	pw, err := bmc.NewPassword()
	if err != nil {
		return nil, nil, err
	}
	addr := trust.InBandAddress(bmc.InBandUser, pw, ib.GetIp())
	sealed, err := a.bmcSeal.Seal(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("seal the in-band BMC credential: %w", err)
	}
	previous := ""
	if m.Trust.BMCInBand {
		previous = m.BMC // what the BMC's password is until the agent sets the new one
	}
	m.BMC, m.Trust.BMCInBand, m.Trust.BMCPrevious = sealed, true, previous
	msg := fmt.Sprintf("BMC %s %s: the agent sets a new password for user %s", bmc.Redact(addr), v.Reason, bmc.InBandUser)
	if previous != "" {
		msg += "; the previous one stays as a fallback until the new one answers"
	}
	return &anvilv1.BMCCredential{User: bmc.InBandUser, Password: pw}, a.event(anvilv1.EventType_EVENT_TYPE_BMC, msg), nil
}

// withEvent is ev followed by more, if there is more.
func withEvent(ev, more *anvilv1.Event) []*anvilv1.Event {
	if more == nil {
		return []*anvilv1.Event{ev}
	}
	return []*anvilv1.Event{ev, more}
}

// checkRegistrar checks what a registration's token is bound to against
// the request: the UUID, a MAC of the inventory, the client address, and
// that a boot token is not spent. It returns why it does not fit, or "".
func (a *agentAPI) checkRegistrar(reg registrar, inv *anvilv1.Inventory, from string, m *store.Machine) string {
	uuid := inv.GetProduct().GetUuid()
	switch reg.kind {
	case trust.Credential:
		// Checked again here, in the transaction: a credential superseded
		// since the interceptor looked it up must not take the machine back.
		if m == nil || m.ID != reg.machineID || !bytes.Equal(m.CredentialHash, reg.credHash) {
			return fmt.Sprintf("the credential belongs to machine %s, or was superseded", reg.machineID)
		}
	case trust.BootToken:
		switch {
		case reg.uuid != "" && reg.uuid != uuid:
			return fmt.Sprintf("the boot token was minted for the network boot of machine %s", reg.uuid)
		case reg.uuid == "" && m != nil:
			return "the boot token was minted for a boot without a UUID, which may enroll a new machine only"
		case !slices.Contains(allMACs(inv), reg.mac):
			return fmt.Sprintf("the boot token was minted for NIC %s, which the inventory does not have", reg.mac)
		case a.cfg.BindBootTokenAddress && reg.addr != from:
			return fmt.Sprintf("the boot token was minted for client %s", reg.addr)
		case m != nil && !reg.minted.After(m.Trust.BootTokensBefore):
			return fmt.Sprintf("the boot token (minted %s) is spent: a boot token is good for one registration", reg.minted.Format(time.RFC3339Nano))
		}
	}
	return ""
}

// setInventory takes a trusted inventory: MACs, size.
func (a *agentAPI) setInventory(ctx context.Context, tx store.Tx, m *store.Machine, inv *anvilv1.Inventory) error {
	all, err := tx.ListSizes(ctx)
	if err != nil {
		return err
	}
	m.MACs = macsOf(inv)
	m.Inventory = inv
	m.SizeID = sizes.Match(all, inv)
	return nil
}

// resume queues what a trusted session of m is to do after it registered
// (or was approved): work a reboot cut short, else the erase new machines
// get.
func (a *agentAPI) resume(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, before lifecycle.Status) error {
	if done, err := a.requeueInterrupted(ctx, tx, fx, m, before); done || err != nil {
		return err
	}
	if a.cfg.RegisterEraseMode == anvilv1.EraseMode_ERASE_MODE_NONE || m.Allocation != nil {
		return nil
	}
	pending, err := tx.PendingInstructions(ctx, m.ID)
	if err != nil {
		return err
	}
	for _, p := range pending {
		if p.Instruction.GetWipe() != nil {
			return nil // already queued by an earlier registration
		}
	}
	return a.queue(ctx, tx, fx, m, &anvilv1.Instruction{Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: a.cfg.RegisterEraseMode, AllowFallback: a.cfg.EraseFallback}}})
}

// observed quotes the network boot the boot service saw of the machine in
// the last ten minutes, for the registration's event: the newest from the
// client its boot token was minted for (client, "" for none), else the
// newest.
func (a *agentAPI) observed(uuid string, macs []string, client string) string {
	obs, _ := a.bootObs.For(uuid, macs, a.now().Add(-10*time.Minute))
	if len(obs) == 0 {
		return "; no network boot seen"
	}
	o := obs[0]
	for _, x := range obs {
		if client != "" && x.Client == client {
			o = x
			break
		}
	}
	return fmt.Sprintf("; network boot seen %s before from %s (NIC %s, %s firmware): %s",
		a.now().Sub(o.Time).Round(time.Second), o.Client, orUnknown(o.MAC), orUnknown(o.Platform), o.Served)
}

// securityEvent records a SECURITY event of m (a refused or suspicious
// request), at most one per SecurityEventEvery per machine; the rest are
// logged only. m nil or not stored yet: logged only.
func (s *Server) securityEvent(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, msg string) error {
	if m == nil || m.ID == "" {
		s.log.Warn("security: "+msg, "machine", "(unknown)")
		return nil
	}
	s.log.Warn("security: "+msg, "machine", m.ID)
	if !s.secEvents.allow(m.ID, s.now()) {
		return nil
	}
	stored, err := tx.GetMachineLight(ctx, m.ID) // its inventories stay as stored
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.record(ctx, tx, fx, stored, false, &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_SECURITY, Message: msg})
}

// allMACs are every MAC of the inventory, lower case (virtual NICs too: a
// boot token's MAC is the NIC iPXE booted from).
func allMACs(inv *anvilv1.Inventory) []string {
	var macs []string
	for _, n := range inv.GetNics() {
		if n.GetMac() != "" {
			macs = append(macs, strings.ToLower(n.GetMac()))
		}
	}
	return macs
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// newSecret returns a random secret (a machine's ATA erase password).
func newSecret() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Wait streams the machine's pending instructions, each once per stream,
// and re-reads the store whenever the hub wakes it. An instruction stays
// pending (and is re-sent on the next stream) until the agent reports on it.
// The stream ends when its credential stops being valid: the machine was
// deleted or registered again (a newer agent instance holds the machine).
func (a *agentAPI) Wait(_ *anvilv1.WaitRequest, stream anvilv1.AgentService_WaitServer) error {
	ctx := stream.Context()
	id, cred := machineFrom(ctx), credentialFrom(ctx)
	release, err := a.streams.acquire(id, a.cfg.MaxWaitStreams)
	if err != nil {
		return err
	}
	defer release()
	w := a.hub.Subscribe(id) // before the first read: no wake-up is missed
	defer w.Close()
	// An agent that opens a Wait stream is alive: after a failover to this
	// replica its last-seen time is written at the next flush, not a
	// heartbeat later.
	a.noteSeen(id, a.now())
	// The stream's first read: the write transaction that records WAITING
	// for an agent that has just registered here; a read for the others
	// (reconnects, a failover from another replica), which write only when
	// the machine still says REGISTERING. Every wake-up reads.
	var pending []*store.Instruction
	_, fresh := a.fresh.get(id)
	a.fresh.forget(id)
	err = onShortStack(func() (err error) {
		pending, err = a.openWait(ctx, id, cred, fresh)
		return err
	})
	var sent map[string]bool // made at the first instruction: most streams only wait
	keep := time.NewTimer(a.cfg.KeepaliveInterval)
	defer keep.Stop()
	for opened := false; ; opened = true {
		if opened {
			err = onShortStack(func() error {
				return a.store.View(ctx, func(tx store.Tx) (err error) {
					_, pending, err = waitState(ctx, tx, id, cred)
					return err
				})
			})
		}
		if errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.Unauthenticated, "machine %s was deleted or registered again; this credential is no longer valid", id)
		}
		if err != nil {
			return toStatus(err)
		}
		if !opened {
			if err := stream.SendHeader(nil); err != nil { // the agent knows it is waiting
				return err
			}
		}
		still := make(map[string]bool, len(pending))
		for _, in := range pending {
			still[in.ID] = true
			if sent[in.ID] {
				continue
			}
			if err := stream.Send(in.Instruction); err != nil {
				return err
			}
			if sent == nil {
				sent = make(map[string]bool)
			}
			sent[in.ID] = true
		}
		for k := range sent { // forget acked or cancelled ones
			if !still[k] {
				delete(sent, k)
			}
		}
		// Until a wake-up (a commit for this machine: an instruction, a
		// cancel, a new credential), keepalives only: an idle agent costs
		// no store read.
	idle:
		for {
			select {
			case <-ctx.Done():
				// The caller's deadline or cancel: say so (an OK status
				// would read as "the controller ended the stream").
				return status.FromContextError(ctx.Err()).Err()
			case <-w.C():
				break idle
			case <-keep.C:
				if err := stream.Send(&anvilv1.Instruction{Kind: &anvilv1.Instruction_Keepalive{Keepalive: &anvilv1.Keepalive{}}}); err != nil {
					return err
				}
				keep.Reset(a.cfg.KeepaliveInterval)
			}
		}
	}
}

// waitState is what a Wait stream sends: the instructions queued for
// machine id, none while its session awaits approval. ErrNotFound when
// cred no longer names the machine (deleted, or registered again); a
// store fault is returned as it is (the agent retries, it does not
// register again).
func waitState(ctx context.Context, tx store.Tx, id string, cred []byte) (*store.Machine, []*store.Instruction, error) {
	holder, err := tx.MachineIDByCredential(ctx, cred)
	if err != nil {
		return nil, nil, err
	}
	if holder != id {
		return nil, nil, store.ErrNotFound
	}
	m, err := tx.GetMachineLight(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if m.Trust.Held {
		return m, nil, nil // a session awaiting approval gets nothing
	}
	pending, err := tx.PendingInstructions(ctx, id)
	return m, pending, err
}

// openWait reads what a Wait stream opens with (waitState) and records
// WAITING when a freshly registered agent with nothing queued opens its
// first stream; reconnects add nothing, and a queued instruction (an
// erase) drives the state through its own events instead, so a machine is
// never Ready while work is pending. A fresh machine (registered here,
// no stream since) goes straight to the write transaction; the others
// read first and take the writer (fleet-wide with replicas) only when
// the machine still says REGISTERING, so a reconnect storm does not queue
// on it.
func (a *agentAPI) openWait(ctx context.Context, id string, cred []byte, fresh bool) ([]*store.Instruction, error) {
	var pending []*store.Instruction
	if !fresh {
		var m *store.Machine
		err := a.store.View(ctx, func(tx store.Tx) (err error) {
			m, pending, err = waitState(ctx, tx, id, cred)
			return err
		})
		if err != nil || m.Status.State != anvilv1.MachineState_MACHINE_STATE_REGISTERING {
			return pending, err
		}
	}
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, p, err := waitState(ctx, tx, id, cred)
		if err != nil {
			return err
		}
		pending = p
		if m.Status.State != anvilv1.MachineState_MACHINE_STATE_REGISTERING {
			return nil
		}
		if m.Trust.Held { // waitState left the queue unread
			if p, err = tx.PendingInstructions(ctx, id); err != nil {
				return err
			}
		}
		if len(p) > 0 {
			return nil
		}
		m.LastSeen = a.now()
		return a.record(ctx, tx, fx, m, false, a.event(anvilv1.EventType_EVENT_TYPE_WAITING, "agent waiting for instructions"))
	})
	return pending, err
}

// terminal reports whether an event ends the running instruction's progress.
func terminal(t anvilv1.EventType) bool {
	switch t {
	case anvilv1.EventType_EVENT_TYPE_WIPING, anvilv1.EventType_EVENT_TYPE_INSTALLING:
		return false
	}
	return true
}

// Report appends the agent's event. Naming an instruction acknowledges it;
// the retry of a report already recorded (same instruction, type and
// message among the last events) is acknowledged without recording it
// twice;
// a report on a cancelled instruction is refused with FailedPrecondition so
// the agent abandons it. Repeated progress of the running phase updates the
// machine's progress and is published to watchers without growing the
// history.
func (a *agentAPI) Report(ctx context.Context, req *anvilv1.ReportRequest) (*anvilv1.ReportResponse, error) {
	id := machineFrom(ctx)
	err := a.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachineLight(ctx, id)
		if err != nil {
			return err
		}
		if m.Trust.Held {
			return status.Errorf(codes.FailedPrecondition, "machine %s awaits an operator's approval; its session reports nothing until then", id)
		}
		if iid := req.GetInstructionId(); iid != "" {
			in, err := tx.GetInstruction(ctx, iid)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err != nil || in.MachineID != id {
				return status.Errorf(codes.NotFound, "instruction %q is not one of machine %s", iid, id)
			}
			if !in.CancelledAt.IsZero() {
				return status.Errorf(codes.FailedPrecondition, "instruction %s was cancelled at %s; abandon it", iid, in.CancelledAt.Format(time.RFC3339))
			}
			if _, err := tx.AckInstruction(ctx, iid, a.now()); err != nil {
				return err
			}
			if req.GetProgress() == nil {
				if dup, err := a.reportedAlready(ctx, tx, id, req); dup || err != nil {
					return err
				}
			}
		}
		m.LastSeen = a.now()
		ev := a.event(req.GetType(), req.GetMessage())
		ev.InstructionId = req.GetInstructionId()
		ev.Progress = req.GetProgress()
		if terminal(req.GetType()) {
			m.Progress = nil
		} else if req.GetProgress() != nil {
			m.Progress = req.GetProgress()
		}
		if req.GetProgress() != nil && req.GetType() == m.Status.LastEvent {
			ev.MachineId = m.ID
			fx.events = append(fx.events, ev) // live progress: published, not stored
			return tx.UpdateMachine(ctx, m)
		}
		return a.record(ctx, tx, fx, m, false, ev)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("report from %s: %w", id, err))
	}
	return &anvilv1.ReportResponse{}, nil
}

// Heartbeat refreshes the machine's last-seen time, in memory: FlushSeen
// writes it in batches. The authentication interceptor already found the
// machine by its credential.
func (a *agentAPI) Heartbeat(ctx context.Context, _ *anvilv1.HeartbeatRequest) (*anvilv1.HeartbeatResponse, error) {
	a.noteSeen(machineFrom(ctx), a.now()) // written in batches (seen.go)
	return &anvilv1.HeartbeatResponse{}, nil
}

// reportedAlready reports whether req is the retry of a report already
// recorded: the agent resends a report whose answer it lost (the
// controller replica it talked to died after the commit), so one of the
// machine's last few events already has its instruction, type and message.
func (a *agentAPI) reportedAlready(ctx context.Context, tx store.Tx, id string, req *anvilv1.ReportRequest) (bool, error) {
	evs, err := tx.LastEvents(ctx, id, 16)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		if e.GetInstructionId() == req.GetInstructionId() && e.GetType() == req.GetType() && e.GetMessage() == req.GetMessage() {
			return true, nil
		}
	}
	return false, nil
}

// requeueInterrupted queues again the work a reboot cut short: a machine
// that registers while its allocation's image was being installed (power
// lost, reset mid-write) gets a fresh Install; one whose reclaim erase was
// cut short gets the same erase again (the RECLAIM event names it). The old
// instruction is cancelled, so a late report on it is refused. It reports
// whether it queued something. A Failed machine is left for the operator.
func (a *agentAPI) requeueInterrupted(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, before lifecycle.Status) (bool, error) {
	if before.State == anvilv1.MachineState_MACHINE_STATE_FAILED || before.State == anvilv1.MachineState_MACHINE_STATE_UNSPECIFIED {
		return false, nil
	}
	pending, err := tx.PendingInstructions(ctx, m.ID)
	if err != nil {
		return false, err
	}
	has := func(kind func(*anvilv1.Instruction) bool) bool {
		for _, p := range pending {
			if kind(p.Instruction) {
				return true
			}
		}
		return false
	}
	isInstall := func(in *anvilv1.Instruction) bool { return in.GetInstall() != nil }
	isWipe := func(in *anvilv1.Instruction) bool { return in.GetWipe() != nil }
	var in *anvilv1.Instruction
	var why string
	switch {
	case m.Allocation != nil && !before.Installed && !has(isInstall):
		img, err := tx.GetImage(ctx, m.Allocation.GetImageId())
		if errors.Is(err, store.ErrNotFound) {
			return true, a.record(ctx, tx, fx, m, false, a.event(anvilv1.EventType_EVENT_TYPE_FAILED,
				fmt.Sprintf("the install of image %s was interrupted and the image no longer exists", m.Allocation.GetImageId())))
		}
		if err != nil {
			return false, err
		}
		if in, err = a.installFor(m, img, m.Allocation); err != nil {
			return false, err
		}
		why = fmt.Sprintf("the install of image %s did not finish before the machine rebooted (it was %s): installing again", img.GetId(), stateName(before.State))
	case before.Reclaiming && !has(isWipe):
		wipe, err := a.reclaimWipe(ctx, tx, m.ID)
		if err != nil {
			return false, err
		}
		in = &anvilv1.Instruction{Kind: &anvilv1.Instruction_Wipe{Wipe: wipe}}
		why = fmt.Sprintf("the reclaim erase (%s) did not finish before the machine rebooted: erasing again", wipe.GetMode())
	default:
		return false, nil
	}
	if err := tx.CancelPending(ctx, m.ID, a.now()); err != nil {
		return false, err
	}
	if err := a.queue(ctx, tx, fx, m, in); err != nil {
		return false, err
	}
	a.log.Info("re-queued interrupted work", "machine", m.ID, "why", why)
	return true, nil
}

// reclaimWipe is the erase the machine's last RECLAIM asked for; if the
// history no longer holds it, the configured free erase mode.
func (a *agentAPI) reclaimWipe(ctx context.Context, tx store.Tx, id string) (*anvilv1.Wipe, error) {
	evs, err := tx.LastEvents(ctx, id, a.cfg.EventHistory)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		if e.GetType() != anvilv1.EventType_EVENT_TYPE_RECLAIM {
			continue
		}
		if e.GetInstructionId() != "" {
			in, err := tx.GetInstruction(ctx, e.GetInstructionId())
			if err == nil && in.Instruction.GetWipe() != nil {
				return in.Instruction.GetWipe(), nil
			}
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
		}
		break
	}
	return &anvilv1.Wipe{Mode: a.cfg.FreeEraseMode, AllowFallback: a.cfg.EraseFallback}, nil
}
