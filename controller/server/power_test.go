package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// TestPowerThroughTheOperatorAPI drives a machine's power through the real
// controller's API (gRPC with TLS on loopback, SQLite store) to a real IPMI
// 2.0 BMC (OpenIPMI's simulator), checking what the BMC carried out.
func TestPowerThroughTheOperatorAPI(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	_, id := e.register(t, 0)
	ms := e.op.Machines
	power := func(action anvilv1.PowerAction, next anvilv1.BootDevice) (*anvilv1.PowerMachineResponse, error) {
		return ms.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: action, NextBoot: next})
	}
	const (
		on     = anvilv1.PowerAction_POWER_ACTION_ON
		off    = anvilv1.PowerAction_POWER_ACTION_OFF
		reset  = anvilv1.PowerAction_POWER_ACTION_RESET
		query  = anvilv1.PowerAction_POWER_ACTION_STATUS
		none   = anvilv1.BootDevice_BOOT_DEVICE_UNSPECIFIED
		pxe    = anvilv1.BootDevice_BOOT_DEVICE_PXE
		disk   = anvilv1.BootDevice_BOOT_DEVICE_DISK
		stOn   = anvilv1.PowerState_POWER_STATE_ON
		stOff  = anvilv1.PowerState_POWER_STATE_OFF
		evType = anvilv1.EventType_EVENT_TYPE_POWER
	)

	_, err := power(query, none)
	wantCode(t, err, codes.FailedPrecondition, "power without a BMC")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "no BMC") || !strings.Contains(msg, "anvilctl machine bmc "+id+" ipmi://") {
		t.Errorf("no-BMC message: %v", err)
	}
	_, err = ms.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: "nope", Action: on})
	wantCode(t, err, codes.NotFound, "power of an unknown machine")
	_, err = power(anvilv1.PowerAction_POWER_ACTION_UNSPECIFIED, none)
	wantCode(t, err, codes.InvalidArgument, "power without an action")
	for _, addr := range []string{"ipmi://admin:pw@10.0.0.5/x", "redfish://10.0.0.5/redfish/v1", "ipmi://admin:pw@10.0.0.5?boot=uefi", "vm.qmp"} {
		_, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: addr})
		wantCode(t, err, codes.InvalidArgument, "BMC "+addr)
		if strings.Contains(err.Error(), ":pw@") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	for _, addr := range []string{"idrac://10.0.0.5", "qmp:///run/anvil/vm1.qmp"} {
		_, err = ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: addr})
		wantCode(t, err, codes.InvalidArgument, "BMC "+addr)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "unsupported BMC type") || !strings.Contains(msg, "ipmi") || !strings.Contains(msg, "redfish") {
			t.Errorf("%s: %q, want unsupported BMC type naming ipmi and redfish", addr, msg)
		}
	}
	// An IPMI BMC is taken; its password is never shown.
	if m, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: "ipmi://admin:Sup3rS3cretBMC@10.0.0.5"}); err != nil || m.GetBmcAddress() != "ipmi://admin:xxxxx@10.0.0.5" {
		t.Fatalf("IPMI BMC: %v, shown as %q", err, m.GetBmcAddress())
	}
	// The store keeps it sealed: the database files never hold the password
	// (nor the user and host: the whole address is sealed).
	for _, f := range []string{"anvil.db", "anvil.db-wal"} {
		b, err := os.ReadFile(filepath.Join(e.dir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("Sup3rS3cretBMC")) || bytes.Contains(b, []byte("admin:")) {
			t.Fatalf("%s holds the BMC credentials in the clear", f)
		}
	}
	_, err = ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: "nope", Address: "ipmi://admin:pw@10.0.0.5"})
	wantCode(t, err, codes.NotFound, "BMC of an unknown machine")

	// Unreachable BMC: a Redfish address where nothing listens.
	closed := freeTCPAddr(t)
	if _, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: "redfish+http://admin:pw@" + closed}); err != nil {
		t.Fatal(err)
	}
	_, err = power(on, none)
	wantCode(t, err, codes.Unavailable, "power through a BMC that does not listen")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "connection refused") || !strings.Contains(msg, closed) || strings.Contains(msg, ":pw@") {
		t.Errorf("unreachable BMC message lacks the reason or shows the password: %q", msg)
	}

	sim := ipmisim.Start(t)
	addr := sim.Address(ipmisim.User, ipmisim.Password)
	shown := bmc.Redact(addr)
	m, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: addr})
	if err != nil || m.GetBmcAddress() != shown {
		t.Fatalf("set BMC: %v, address %q, want %q", err, m.GetBmcAddress(), shown)
	}
	before := events(t, e, id)

	r, err := power(query, none)
	if err != nil || r.GetState() != stOff || r.GetDetail() != "chassis power off" || r.GetNextBoot() != none || r.GetEvent() != nil {
		t.Fatalf("status: %v %v", r, err)
	}
	if n := len(events(t, e, id)); n != len(before) {
		t.Errorf("STATUS recorded %d events", n-len(before))
	}

	for i, step := range []struct {
		action   anvilv1.PowerAction
		next     anvilv1.BootDevice
		state    anvilv1.PowerState
		nextBoot anvilv1.BootDevice
		message  string
		// carried is what the BMC carried out (its chassis commands).
		carried string
	}{
		{on, disk, stOn, disk, "power on (next boot disk) by operator through " + shown + ": now on", "boot=default power=1"},
		{off, none, stOff, disk, "power off by operator through " + shown + ": now off", "power=0"},
		// Reset of an off machine powers it on; of a running one resets it.
		{reset, pxe, stOn, pxe, "power reset (next boot pxe) by operator through " + shown + ": now on", "boot=pxe power=1"},
		{reset, none, stOn, pxe, "power reset by operator through " + shown + ": now on", "reset=1"},
		{on, none, stOn, pxe, "power on by operator through " + shown + ": now on", "power=1"},
	} {
		mark := sim.Log(t)
		r, err := power(step.action, step.next)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if r.GetMachineId() != id || r.GetState() != step.state || r.GetNextBoot() != step.nextBoot {
			t.Fatalf("step %d: %v", i, r)
		}
		if ev := r.GetEvent(); ev.GetType() != evType || ev.GetMessage() != step.message || ev.GetSeq() == 0 {
			t.Fatalf("step %d: event %v, want %q", i, ev, step.message)
		}
		evs := events(t, e, id)
		if last := evs[len(evs)-1]; last.GetType() != evType || last.GetMessage() != step.message {
			t.Fatalf("step %d: last event in the history %v", i, last)
		}
		if got := strings.TrimSpace(strings.TrimPrefix(sim.Log(t), mark)); got != step.carried {
			t.Fatalf("step %d: the BMC carried out %q, want %q", i, got, step.carried)
		}
	}
	// Concurrent calls on one BMC are serialized, none fails.
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() { _, err := power(query, none); errs <- err }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent status: %v", err)
		}
	}
	// Setting only the next boot device.
	if r, err := power(query, disk); err != nil || r.GetNextBoot() != disk || r.GetState() != stOn {
		t.Fatalf("status with next boot: %v %v", r, err)
	}
	m, err = ms.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
	if err != nil || m.GetState() != anvilv1.MachineState_MACHINE_STATE_REGISTERING || m.GetLastEvent().GetType() != evType {
		t.Fatalf("machine after power actions: %v, state %v, last event %v", err, m.GetState(), m.GetLastEvent())
	}

	// The BMC survives a re-registration; an empty address clears it.
	e.register(t, 0)
	if m, err := ms.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id}); err != nil || m.GetBmcAddress() != shown {
		t.Fatalf("BMC after re-registration: %q, %v", m.GetBmcAddress(), err)
	}
	if m, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id}); err != nil || m.GetBmcAddress() != "" {
		t.Fatalf("clear BMC: %v, %q", err, m.GetBmcAddress())
	}
	_, err = power(query, none)
	wantCode(t, err, codes.FailedPrecondition, "power after the BMC was cleared")
}

// freeTCPAddr returns a loopback host:port nothing listens on.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func events(t *testing.T, e env, id string) []*anvilv1.Event {
	t.Helper()
	r, err := e.op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetEvents()
}

// TestPowerThroughIPMI drives a machine's power through a real IPMI 2.0
// session to OpenIPMI's simulator; a wrong password is a clear refusal,
// tried once, and one BMC event (not one per attempt); every event names
// the operator (token fingerprint, address) who asked.
func TestPowerThroughIPMI(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	_, id := e.register(t, 0)
	ms := e.op.Machines
	sim := ipmisim.Start(t)
	const wrong = "Wr0ngPassw0rd"
	if _, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: sim.Address(ipmisim.User, wrong)}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(e.h.Running().AdminToken))
	operator := fmt.Sprintf("operator %x from 127.0.0.1", sum[:4])
	before := len(events(t, e, id))
	for range 3 {
		_, err := ms.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_RESET})
		wantCode(t, err, codes.FailedPrecondition, "power with a wrong BMC password")
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "refused the credentials") || strings.Contains(msg, wrong) {
			t.Errorf("wrong password message %q: want the refusal, without the password", msg)
		}
	}
	evs := events(t, e, id)[before:]
	if len(evs) != 1 || sim.Log(t) != "" {
		t.Fatalf("three refused power actions recorded %v and ran %q; want one BMC event and nothing run", evs, sim.Log(t))
	}
	if ev := evs[0]; ev.GetType() != anvilv1.EventType_EVENT_TYPE_BMC || ev.GetActor() != operator ||
		!strings.Contains(ev.GetMessage(), "refused the credentials") || strings.Contains(ev.GetMessage(), wrong) {
		t.Fatalf("BMC event %v: want the refusal, by %q, without the password", ev, operator)
	}
	if _, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: sim.Address(ipmisim.User, ipmisim.Password)}); err != nil {
		t.Fatal(err)
	}
	r, err := ms.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_RESET, NextBoot: anvilv1.BootDevice_BOOT_DEVICE_PXE})
	if err != nil || r.GetState() != anvilv1.PowerState_POWER_STATE_ON || r.GetNextBoot() != anvilv1.BootDevice_BOOT_DEVICE_PXE {
		t.Fatalf("reset into PXE through IPMI: %v, %v", r, err)
	}
	if got := sim.Log(t); got != "boot=pxe power=1" {
		t.Fatalf("the BMC carried out %q, want the boot override then power on (the machine was off)", got)
	}
	if ev := r.GetEvent(); !strings.Contains(ev.GetMessage(), "ipmi://admin:xxxxx@127.0.0.1") || ev.GetActor() != operator {
		t.Errorf("event %q by %q: want the BMC named without its password, by %q", ev.GetMessage(), ev.GetActor(), operator)
	}
	// The actor is stored with the event.
	if all := events(t, e, id); all[len(all)-1].GetActor() != operator {
		t.Errorf("stored POWER event's actor %q, want %q", all[len(all)-1].GetActor(), operator)
	}
}

// TestSilentMachinesAreCheckedThroughTheirBMC: a machine whose agent went
// silent is reported Off or Hung, as its BMC says, by the controller's own
// periodic check (real IPMI to OpenIPMI's simulator).
func TestSilentMachinesAreCheckedThroughTheirBMC(t *testing.T) {
	h := harness.StartController(t, t.TempDir(), func(c *app.Config) {
		c.Server.Lifecycle.AliveTimeout, c.Server.Lifecycle.DeadTimeout = 200*time.Millisecond, 400*time.Millisecond
		c.Server.BMCCheckInterval = 300 * time.Millisecond
		c.Server.LiveWindow = 200 * time.Millisecond
		c.Server.SeenFlushInterval, c.Server.SeenFlushLag, c.Server.HeartbeatInterval = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	})
	e := env{h: h, op: h.Operator(), agent: anvilv1.NewAgentServiceClient(h.Dial(""))}
	ctx := context.Background()
	_, id := e.register(t, 0)
	_, other := e.register(t, 1) // no BMC: stays Dead
	sim := ipmisim.Start(t)
	if _, err := e.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: sim.Address(ipmisim.User, ipmisim.Password)}); err != nil {
		t.Fatal(err)
	}
	waitLiveliness := func(id string, want anvilv1.Liveliness) {
		t.Helper()
		harness.Eventually(t, 10*time.Second, func() error {
			m, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
			if err != nil {
				return err
			}
			if m.GetLiveliness() != want {
				return fmt.Errorf("liveliness %v, want %v", m.GetLiveliness(), want)
			}
			return nil
		})
	}
	waitLiveliness(id, anvilv1.Liveliness_LIVELINESS_OFF)
	// Powered on, still silent: hung.
	if _, err := e.op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_ON}); err != nil {
		t.Fatal(err)
	}
	waitLiveliness(id, anvilv1.Liveliness_LIVELINESS_HUNG)
	waitLiveliness(other, anvilv1.Liveliness_LIVELINESS_DEAD)
	// The agent talks again: alive, whatever the BMC said.
	if _, err := e.agent.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(id, 0)}, bearer(e.h.Running().BootToken)); err != nil {
		t.Fatal(err)
	}
	if m, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id}); err != nil || m.GetLiveliness() != anvilv1.Liveliness_LIVELINESS_ALIVE {
		t.Fatalf("after the agent came back: %v, %v", m.GetLiveliness(), err)
	}
}
