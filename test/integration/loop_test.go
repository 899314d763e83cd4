// Package integration runs the provisioning loop end to end in-process: a
// real controller (TLS, SQLite file, gRPC on loopback) and many real agent
// runners, with the controller killed and restarted while they wait.
package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

const agents = 50

func waitStates(t *testing.T, op harness.Operator, want anvilv1.MachineState, n int, timeout time.Duration) {
	t.Helper()
	harness.Eventually(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := op.Machines.ListMachines(ctx, &anvilv1.ListMachinesRequest{State: want})
		if err != nil {
			return err
		}
		if got := len(resp.GetMachines()); got != n {
			return fmt.Errorf("%d machines %s, want %d", got, want, n)
		}
		return nil
	})
}

func TestLoopSurvivesControllerRestarts(t *testing.T) {
	h := harness.StartController(t, t.TempDir(), nil)
	op := h.Operator()
	ctx := context.Background()
	_, err := op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "debian-12", Url: "http://images.example/debian-12.raw.zst", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
		Checksum: "sha256:" + fmt.Sprintf("%064x", 1), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}})
	if err != nil {
		t.Fatal(err)
	}

	as := make([]*harness.Agent, agents)
	for i := range as {
		as[i] = h.StartAgent(t, harness.UUID(t.Name(), i), i)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, agents, 60*time.Second)

	// 1. Kill the controller while every agent waits; bring it back.
	h.Stop()
	time.Sleep(300 * time.Millisecond)
	h.Start()
	op = h.Operator()
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, agents, 30*time.Second)

	// 2. Allocate every machine, killing the controller halfway through
	// the allocations so that some instructions are queued and delivered
	// before the kill and some after the restart.
	// Each machine gets its own hostname, so an instruction delivered to
	// the wrong agent after a restart shows in what the agent executed.
	allocated := make(map[string]string, agents) // machine id → hostname asked for
	for i, a := range as {
		if i == agents/2 {
			h.Stop()
			h.Start()
			op = h.Operator()
		}
		host := fmt.Sprintf("node-%02d", i)
		m, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.UUID, ImageId: "debian-12", Hostname: host})
		if err != nil {
			t.Fatalf("allocate %s: %v", a.UUID, err)
		}
		if m.GetId() != a.UUID || m.GetAllocation().GetHostname() != host {
			t.Fatalf("allocate %s as %s: got machine %s allocated as %q", a.UUID, host, m.GetId(), m.GetAllocation().GetHostname())
		}
		allocated[a.UUID] = host
	}
	// Allocating a busy machine is refused, and changes nothing.
	if _, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: as[0].UUID, ImageId: "debian-12"}); err == nil {
		t.Fatal("allocating a busy machine succeeded")
	}
	// One more kill while installs are being acknowledged.
	h.Stop()
	h.Start()
	op = h.Operator()
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_BOOTING, agents, 60*time.Second)

	// 3. Free everything, with a kill in between; every machine erases
	// once and is Ready again.
	for i, a := range as {
		if i == agents/3 {
			h.Stop()
			h.Start()
			op = h.Operator()
		}
		if _, err := op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: a.UUID}); err != nil {
			t.Fatalf("free %s: %v", a.UUID, err)
		}
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, agents, 60*time.Second)

	// Exactly once: every agent executed exactly one install and one wipe,
	// each instruction once, and the install it executed is its own
	// machine's allocation.
	for _, a := range as {
		for name, rec := range map[string]*harness.Recorder{"install": a.Install, "wipe": a.Wipe} {
			runs, order := rec.Runs()
			if len(runs) != 1 {
				t.Errorf("agent %s: %d distinct %s instructions executed (%v), want 1", a.UUID, len(runs), name, order)
			}
			for id, n := range runs {
				if n != 1 {
					t.Errorf("agent %s: %s instruction %s executed %d times", a.UUID, name, id, n)
				}
			}
		}
		if got, want := a.Install.Last().GetInstall().GetHostname(), allocated[a.UUID]; got != want {
			t.Errorf("agent %s installed hostname %q, but its machine was allocated as %q", a.UUID, got, want)
		}
	}

	// Every machine's history tells the story in order.
	for _, a := range as {
		evs, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: a.UUID})
		if err != nil {
			t.Fatalf("events of %s: %v", a.UUID, err)
		}
		var types []anvilv1.EventType
		for _, e := range evs.GetEvents() {
			types = append(types, e.GetType())
		}
		if err := inOrder(types, story); err != nil {
			t.Errorf("history of %s: %v", a.UUID, err)
		}
	}
}

// story is what every machine of TestLoopSurvivesControllerRestarts goes
// through, in this order.
var story = []anvilv1.EventType{
	anvilv1.EventType_EVENT_TYPE_REGISTERING, anvilv1.EventType_EVENT_TYPE_WAITING, anvilv1.EventType_EVENT_TYPE_ALLOCATED,
	anvilv1.EventType_EVENT_TYPE_INSTALLING, anvilv1.EventType_EVENT_TYPE_BOOTING, anvilv1.EventType_EVENT_TYPE_RECLAIM,
	anvilv1.EventType_EVENT_TYPE_WIPING, anvilv1.EventType_EVENT_TYPE_WIPED,
}

// inOrder returns nil if want occurs in have in the same order (other
// events may come between), or an error naming the first event of want
// missing after its predecessors.
func inOrder(have, want []anvilv1.EventType) error {
	i := 0
	for _, h := range have {
		if i < len(want) && h == want[i] {
			i++
		}
	}
	if i < len(want) {
		after := "at the start"
		if i > 0 {
			after = "after " + want[i-1].String()
		}
		return fmt.Errorf("no %s %s in %v (want %v in this order)", want[i], after, have, want)
	}
	return nil
}

// TestInOrder checks the order check itself: the story passes, with other
// events between or around its steps, and every story with two steps
// swapped or one step left out fails.
func TestInOrder(t *testing.T) {
	extra := anvilv1.EventType_EVENT_TYPE_REGISTERING
	padded := []anvilv1.EventType{extra}
	for _, e := range story {
		padded = append(padded, e, extra)
	}
	for name, have := range map[string][]anvilv1.EventType{"exact": story, "padded": padded} {
		if err := inOrder(have, story); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for i := range story {
		for j := i + 1; j < len(story); j++ {
			swapped := slices.Clone(story)
			swapped[i], swapped[j] = swapped[j], swapped[i]
			if inOrder(swapped, story) == nil {
				t.Errorf("history %v passes as %v", swapped, story)
			}
		}
		missing := slices.Delete(slices.Clone(story), i, i+1)
		if inOrder(missing, story) == nil {
			t.Errorf("history without %s passes", story[i])
		}
	}
}

// TestWaitIsWokenWithoutPolling checks that an allocation reaches a
// waiting agent at once, pushed by the controller. The keepalive and the
// heartbeat, the only timers a Wait stream and an agent have, are an hour
// here, so only a wake-up can deliver. Every allocation of several must
// arrive within wakeBound, measured to the millisecond: a controller that
// re-read the store every P seconds instead would deliver each after a
// uniform delay in [0, P), and pass all rounds with a chance of
// (wakeBound/P)^rounds at most (P = 2 s: 1/256; P = 3 s: 1/6561).
// Push takes a few milliseconds here (tens under -race on a loaded machine).
func TestWaitIsWokenWithoutPolling(t *testing.T) {
	const (
		rounds    = 8
		wakeBound = time.Second
	)
	h := harness.StartController(t, t.TempDir(), func(c *app.Config) {
		c.Server.KeepaliveInterval = time.Hour
		c.Server.HeartbeatInterval = time.Hour
	})
	op := h.Operator()
	ctx := context.Background()
	if _, err := op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "img", Url: "http://x/img", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + fmt.Sprintf("%064x", 2), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}
	as := make([]*harness.Agent, rounds)
	for i := range as {
		as[i] = h.StartAgent(t, harness.UUID(t.Name(), i), i)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, rounds, 30*time.Second)
	for _, a := range as {
		start := time.Now()
		if _, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.UUID, ImageId: "img"}); err != nil {
			t.Fatalf("allocate %s: %v", a.UUID, err)
		}
		for {
			if runs, _ := a.Install.Runs(); len(runs) > 0 {
				break
			}
			if time.Since(start) > wakeBound {
				t.Fatalf("agent %s: install not executed %v after the allocation: the Wait stream was not woken", a.UUID, wakeBound)
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("agent %s: allocate → executed in %v", a.UUID, time.Since(start))
	}
}
