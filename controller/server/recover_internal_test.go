package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// fakeClock is the injected time of a test server.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// powerEnv is a server on a real SQLite store with an injected clock, and
// BMC driver opens counted (each opens one driver per BMC operation batch:
// a check, a power action, a power cycle).
type powerEnv struct {
	s     *Server
	clock *fakeClock
	opens atomic.Int32
	ops   *machineAPI
	op    context.Context // an authenticated operator's context
}

func newPowerEnv(t *testing.T, edit func(*Config)) *powerEnv {
	t.Helper()
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := DefaultConfig()
	cfg.BMCTimeout = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	e := &powerEnv{clock: &fakeClock{t: epoch}}
	s, err := New(st, Credentials{AdminTokens: []string{"admin-token-for-tests"}, BootTokens: []string{"boot-token-for-tests"}}, cfg,
		WithClock(e.clock.now), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	s.openBMC = func(addr string) (bmc.Driver, error) {
		e.opens.Add(1)
		return bmc.Open(addr, bmc.WithTimeout(cfg.BMCTimeout))
	}
	e.s, e.ops = s, &machineAPI{Server: s}
	e.op = withOperator(t.Context(), operatorID{token: "0a1b2c3d", from: "192.0.2.7"})
	return e
}

// register registers machine i through the agent API as an agent with the
// shared boot token would, at the clock's time.
func (e *powerEnv) register(t *testing.T, uuid string) {
	t.Helper()
	ctx := context.WithValue(t.Context(), registrarKey{}, registrar{kind: trust.SharedToken})
	inv := &anvilv1.Inventory{
		Product: &anvilv1.Product{Uuid: uuid},
		Disks:   []*anvilv1.Disk{{Name: "vda", Path: "/dev/vda", SizeBytes: 8 << 30}},
		Nics:    []*anvilv1.NIC{{Name: "eth0", Mac: "52:54:00:00:00:01"}},
	}
	if _, err := (&agentAPI{Server: e.s}).Register(ctx, &anvilv1.RegisterRequest{Inventory: inv}); err != nil {
		t.Fatalf("register %s: %v", uuid, err)
	}
}

func (e *powerEnv) setBMC(t *testing.T, id, addr string) {
	t.Helper()
	if _, err := e.ops.SetMachineBMC(e.op, &anvilv1.SetMachineBMCRequest{Id: id, Address: addr}); err != nil {
		t.Fatalf("set BMC: %v", err)
	}
}

// bmcEvents are the machine's BMC events.
func (e *powerEnv) bmcEvents(t *testing.T, id string) []*anvilv1.Event {
	t.Helper()
	r, err := e.ops.ListEvents(t.Context(), &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []*anvilv1.Event
	for _, ev := range r.GetEvents() {
		if ev.GetType() == anvilv1.EventType_EVENT_TYPE_BMC {
			out = append(out, ev)
		}
	}
	return out
}

func (e *powerEnv) checkEvery(t *testing.T, from time.Duration, n int, every time.Duration) {
	t.Helper()
	for i := range n {
		e.clock.set(epoch.Add(from + time.Duration(i)*every))
		if _, err := e.s.CheckSilentMachines(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWrongBMCPasswordIsAskedOnce: a silent machine whose BMC (a real
// ipmi_sim) refuses the credentials is asked once over many check
// intervals, with one BMC event; setting the address again lets the checks
// try once more; the right password is answered, with no event.
func TestWrongBMCPasswordIsAskedOnce(t *testing.T) {
	e := newPowerEnv(t, func(c *Config) { c.BootDeadline = 0 })
	const id = "00000000-0000-4000-8000-000000000001"
	e.register(t, id)
	sim := ipmisim.Start(t)
	const pw = "Wr0ngPassw0rd"
	e.setBMC(t, id, sim.Address(ipmisim.User, pw))

	// Dead after DeadTimeout (10 min); then a check every interval for
	// 20 intervals.
	e.checkEvery(t, 11*time.Minute, 20, time.Minute)
	if n := e.opens.Load(); n != 1 {
		t.Fatalf("the BMC that refused the credentials was asked %d times over 20 check intervals, want 1", n)
	}
	evs := e.bmcEvents(t, id)
	if len(evs) != 1 {
		t.Fatalf("%d BMC events, want 1: %v", len(evs), evs)
	}
	ev := evs[0]
	if ev.GetActor() != "controller (checking the power state of a silent machine)" ||
		!strings.Contains(ev.GetMessage(), "refused the credentials") || !strings.Contains(ev.GetMessage(), "ipmi://admin:xxxxx@127.0.0.1") ||
		strings.Contains(ev.GetMessage(), pw) {
		t.Fatalf("event: actor %q message %q", ev.GetActor(), ev.GetMessage())
	}
	if m, err := e.ops.GetMachine(t.Context(), &anvilv1.GetMachineRequest{Id: id}); err != nil || m.GetLiveliness() != anvilv1.Liveliness_LIVELINESS_DEAD {
		t.Fatalf("machine behind a refusing BMC: %v %v, want dead", m.GetLiveliness(), err)
	}

	// An operator's power action is made (and fails) without another
	// event: the condition did not change.
	if _, err := e.ops.PowerMachine(e.op, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_STATUS}); err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("operator status through a wrong password: %v", err)
	}
	if n := len(e.bmcEvents(t, id)); n != 1 || e.opens.Load() != 2 {
		t.Fatalf("after the operator's call: %d BMC events, %d opens; want 1 and 2", n, e.opens.Load())
	}

	// The address set again (the same): the checks try once more.
	e.setBMC(t, id, sim.Address(ipmisim.User, pw))
	e.checkEvery(t, 31*time.Minute, 10, time.Minute)
	if n, evs := e.opens.Load(), e.bmcEvents(t, id); n != 3 || len(evs) != 2 {
		t.Fatalf("after the address was set again: %d opens, %d BMC events; want 3 and 2", n, len(evs))
	}

	// The right password: answered, no event (a new BMC), Off.
	e.setBMC(t, id, sim.Address(ipmisim.User, ipmisim.Password))
	e.checkEvery(t, 41*time.Minute, 1, time.Minute)
	if n, evs := e.opens.Load(), e.bmcEvents(t, id); n != 4 || len(evs) != 2 {
		t.Fatalf("with the right password: %d opens, %d BMC events; want 4 and 2", n, len(evs))
	}
	if m, err := e.ops.GetMachine(t.Context(), &anvilv1.GetMachineRequest{Id: id}); err != nil || m.GetLiveliness() != anvilv1.Liveliness_LIVELINESS_OFF {
		t.Fatalf("machine behind a good BMC: %v %v, want off", m.GetLiveliness(), err)
	}
}

// TestUnreachableBMCBacksOff: a silent machine's BMC that does not answer
// (nothing on its UDP port) is asked after doubling waits, with one event;
// when the simulator comes up on that port, one recovery event.
func TestUnreachableBMCBacksOff(t *testing.T) {
	e := newPowerEnv(t, func(c *Config) {
		c.BootDeadline, c.BMCTimeout, c.BMCBackoffMax = 0, 300*time.Millisecond, 4*time.Minute
	})
	const id = "00000000-0000-4000-8000-000000000002"
	e.register(t, id)
	port := ipmisim.FreeUDPPort(t)
	sim := &ipmisim.Sim{Port: port}
	e.setBMC(t, id, sim.Address(ipmisim.User, ipmisim.Password))

	// Checks every minute from minute 11: the BMC is asked at 11, 12, 14,
	// 18 and 22 (waits of 1, 2, 4 and at most 4 minutes).
	e.checkEvery(t, 11*time.Minute, 12, time.Minute)
	if n := e.opens.Load(); n != 5 {
		t.Fatalf("the unreachable BMC was asked %d times in 12 check intervals, want 5 (backoff 1, 2, 4, 4 min)", n)
	}
	evs := e.bmcEvents(t, id)
	if len(evs) != 1 || !strings.Contains(evs[0].GetMessage(), "unreachable") || strings.Contains(evs[0].GetMessage(), ipmisim.Password) {
		t.Fatalf("BMC events %v, want one saying unreachable", evs)
	}

	_, stop, err := ipmisim.Run(t.TempDir(), port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	e.checkEvery(t, 26*time.Minute, 3, time.Minute)
	evs = e.bmcEvents(t, id)
	if len(evs) != 2 || !strings.Contains(evs[1].GetMessage(), "answers again") || !strings.Contains(evs[1].GetMessage(), "unreachable since") {
		t.Fatalf("BMC events after the BMC came up: %v, want one more saying it answers again", evs)
	}
}

// TestRecoveryPowerCycles drives the recovery sweep with a real IPMI
// simulator and an injected clock, one sweep a minute: a machine reset
// into PXE whose agent never comes (or that crash-loops) is power-cycled
// 3 times with waits of 10, 20 and 40 minutes, then left alone with one
// event; an agent registering in between ends the power cycles.
func TestRecoveryPowerCycles(t *testing.T) {
	const (
		noAgent = iota
		crashLoop
		registers
	)
	for _, tt := range []struct {
		name string
		kind int
		// cycles are the minutes of the power cycles and giveUp the minute
		// of the give-up event (0: none).
		cycles []int
		giveUp int
		actors []string
	}{
		{"no agent after the reset", noAgent, []int{10, 30, 70}, 150, []string{
			"controller (no agent 10 min after reset into PXE, attempt 1/3)",
			"controller (no agent 20 min after power cycle 1 into PXE, attempt 2/3)",
			"controller (no agent 40 min after power cycle 2 into PXE, attempt 3/3)",
			"controller (no agent 80 min after power cycle 3 into PXE, 3/3 power cycles spent)",
		}},
		{"the agent registers after the first power cycle", registers, []int{10}, 0, []string{
			"controller (no agent 10 min after reset into PXE, attempt 1/3)",
		}},
		{"crash loop", crashLoop, []int{10, 30, 70}, 150, []string{
			"controller (crash loop: 4 incomplete boot cycles in a row, 10 min after the crash loop was seen, attempt 1/3)",
			"controller (crash loop: 4 incomplete boot cycles in a row, 20 min after power cycle 1 into PXE, attempt 2/3)",
			"controller (crash loop: 4 incomplete boot cycles in a row, 40 min after power cycle 2 into PXE, attempt 3/3)",
			"controller (crash loop: still looping 80 min after power cycle 3 into PXE, 3/3 power cycles spent)",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newPowerEnv(t, nil)
			const id = "00000000-0000-4000-8000-000000000003"
			e.register(t, id)
			sim := ipmisim.Start(t)
			e.setBMC(t, id, sim.Address(ipmisim.User, ipmisim.Password))
			m, err := e.s.getMachine(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			wantLog := ""
			if tt.kind == crashLoop {
				for range 4 {
					if err := e.s.recordEvent(t.Context(), id, nil, &anvilv1.Event{Time: timestamppb.New(e.clock.now()), Type: anvilv1.EventType_EVENT_TYPE_PXE_BOOTING}); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				// What FreeMachine does for a machine running its OS.
				if err := e.ops.rebootIntoAgent(e.op, m, true, "free"); err != nil {
					t.Fatal(err)
				}
				wantLog = "boot=pxe power=1"
				evs, _ := e.ops.ListEvents(t.Context(), &anvilv1.ListEventsRequest{MachineId: id})
				last := evs.GetEvents()[len(evs.GetEvents())-1]
				if last.GetType() != anvilv1.EventType_EVENT_TYPE_POWER || last.GetActor() != "controller (free asked by operator 0a1b2c3d from 192.0.2.7)" ||
					!strings.HasPrefix(last.GetMessage(), "power reset (next boot pxe) by the controller through ") {
					t.Fatalf("the reset into PXE: %v", last)
				}
			}
			var cycledAt []int
			for minute := 0; minute <= 300; minute++ {
				e.clock.set(epoch.Add(time.Duration(minute) * time.Minute))
				if tt.kind == registers && minute == 15 {
					e.register(t, id)
				}
				n, err := e.s.RecoverMachines(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				for range n {
					cycledAt = append(cycledAt, minute)
				}
			}
			if fmt.Sprint(cycledAt) != fmt.Sprint(tt.cycles) {
				t.Fatalf("power cycles at minutes %v, want %v", cycledAt, tt.cycles)
			}
			for range tt.cycles {
				wantLog = strings.TrimSpace(wantLog + " boot=pxe power=0 power=1")
			}
			if got := sim.Log(t); got != wantLog {
				t.Fatalf("the BMC carried out %q, want %q", got, wantLog)
			}
			evs := e.bmcEvents(t, id)
			var actors []string
			for i, ev := range evs {
				actors = append(actors, ev.GetActor())
				at := int(ev.GetTime().AsTime().Sub(epoch) / time.Minute)
				switch {
				case i < len(tt.cycles):
					if at != tt.cycles[i] || !strings.HasPrefix(ev.GetMessage(), "power-cycled into PXE through ipmi://admin:xxxxx@127.0.0.1") {
						t.Errorf("event %d at minute %d: %q", i, at, ev.GetMessage())
					}
				default:
					if at != tt.giveUp || !strings.HasPrefix(ev.GetMessage(), "left alone: ") {
						t.Errorf("event %d at minute %d: %q, want the give-up at minute %d", i, at, ev.GetMessage(), tt.giveUp)
					}
				}
			}
			if strings.Join(actors, "\n") != strings.Join(tt.actors, "\n") {
				t.Fatalf("BMC event actors:\n%s\nwant:\n%s", strings.Join(actors, "\n"), strings.Join(tt.actors, "\n"))
			}
			if tt.giveUp == 0 {
				return
			}
			// An operator acts: the watch starts over (a crash loop is
			// watched again; a machine merely left alone is not).
			if _, err := e.ops.PowerMachine(e.op, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_ON}); err != nil {
				t.Fatal(err)
			}
			before := len(e.bmcEvents(t, id))
			cycled := 0
			for minute := 301; minute <= 320; minute++ {
				e.clock.set(epoch.Add(time.Duration(minute) * time.Minute))
				n, err := e.s.RecoverMachines(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				cycled += n
			}
			want := 0
			if tt.kind == crashLoop {
				want = 1 // 10 minutes after the sweep that saw the loop again
			}
			if cycled != want || len(e.bmcEvents(t, id)) != before+want {
				t.Fatalf("after the operator acted: %d power cycles, %d new BMC events; want %d", cycled, len(e.bmcEvents(t, id))-before, want)
			}
		})
	}
}

// TestRecoveryLeavesARefusingBMCAlone: a recovery power cycle through a BMC
// (a real ipmi_sim) that refuses the credentials is tried once, one BMC
// event, and counts no attempt: no give-up either, and no retry storm.
func TestRecoveryLeavesARefusingBMCAlone(t *testing.T) {
	e := newPowerEnv(t, nil)
	const id = "00000000-0000-4000-8000-000000000004"
	e.register(t, id)
	sim := ipmisim.Start(t)
	e.setBMC(t, id, sim.Address(ipmisim.User, "Wr0ngPassw0rd"))
	e.s.cycles.arm(id, epoch) // as rebootIntoAgent does after its reset
	cycled := 0
	for minute := 0; minute <= 300; minute++ {
		e.clock.set(epoch.Add(time.Duration(minute) * time.Minute))
		n, err := e.s.RecoverMachines(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		cycled += n
	}
	evs := e.bmcEvents(t, id)
	if n := e.opens.Load(); n != 1 || cycled != 0 || sim.Log(t) != "" {
		t.Fatalf("over 300 sweeps: %d BMC opens, %d power cycles, the BMC ran %q; want 1, 0 and nothing", n, cycled, sim.Log(t))
	}
	if len(evs) != 1 || evs[0].GetActor() != "controller (no agent 10 min after reset into PXE, attempt 1/3)" || !strings.Contains(evs[0].GetMessage(), "refused the credentials") {
		t.Fatalf("BMC events %v: want one refusal by the recovery sweep", evs)
	}
}

// A machine running its installed system is never power-cycled for a
// crash loop: registrations that are not its own (anyone on the boot
// network can make them) are what makes it look like one.
func TestInstalledMachineIsNotPowerCycledForACrashLoop(t *testing.T) {
	e := newPowerEnv(t, nil)
	const id = "00000000-0000-4000-8000-0000000000c7"
	e.register(t, id)
	sim := ipmisim.Start(t)
	e.setBMC(t, id, sim.Address(ipmisim.User, ipmisim.Password))
	if err := e.s.commit(t.Context(), func(tx store.Tx, _ *effects) error {
		m, err := tx.GetMachine(t.Context(), id)
		if err != nil {
			return err
		}
		m.Allocation = &anvilv1.Allocation{ImageId: "img", Hostname: "web-1"}
		m.Status.Allocated, m.Status.Installed = true, true
		m.Status.State = anvilv1.MachineState_MACHINE_STATE_PROVISIONED
		m.Status.IncompleteCycles, m.Status.CrashLoop = 5, true
		return tx.UpdateMachine(t.Context(), m)
	}); err != nil {
		t.Fatal(err)
	}
	for minute := 0; minute <= 300; minute += 5 {
		e.clock.set(epoch.Add(time.Duration(minute) * time.Minute))
		n, err := e.s.RecoverMachines(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("minute %d: %d power cycles of a provisioned machine", minute, n)
		}
	}
	if got := sim.Log(t); got != "" {
		t.Errorf("the BMC carried out %q", got)
	}
}
