// Package integration runs the provisioning loop end to end in-process: a
// real controller (TLS, SQLite file, gRPC on loopback) and many real agent
// runners, with the controller killed and restarted while they wait.
package integration

import (
	"context"
	"fmt"
	"sync"
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
	allocated := make(map[string]string) // machine id → install instruction count check later
	for i, a := range as {
		if i == agents/2 {
			h.Stop()
			h.Start()
			op = h.Operator()
		}
		m, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.UUID, ImageId: "debian-12", Hostname: fmt.Sprintf("node-%02d", i)})
		if err != nil {
			t.Fatalf("allocate %s: %v", a.UUID, err)
		}
		allocated[m.GetId()] = m.GetAllocation().GetHostname()
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
	// each instruction once.
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
	}

	// The history tells the story in order, with nothing half-written.
	evs, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: as[0].UUID})
	if err != nil {
		t.Fatal(err)
	}
	var types []anvilv1.EventType
	for _, e := range evs.GetEvents() {
		types = append(types, e.GetType())
	}
	for _, want := range []anvilv1.EventType{
		anvilv1.EventType_EVENT_TYPE_REGISTERING, anvilv1.EventType_EVENT_TYPE_WAITING, anvilv1.EventType_EVENT_TYPE_ALLOCATED,
		anvilv1.EventType_EVENT_TYPE_INSTALLING, anvilv1.EventType_EVENT_TYPE_BOOTING, anvilv1.EventType_EVENT_TYPE_RECLAIM,
		anvilv1.EventType_EVENT_TYPE_WIPING, anvilv1.EventType_EVENT_TYPE_WIPED,
	} {
		if !containsInOrder(types, want) {
			t.Errorf("history of %s lacks %s: %v", as[0].UUID, want, types)
		}
	}
}

func containsInOrder(have []anvilv1.EventType, want anvilv1.EventType) bool {
	for _, h := range have {
		if h == want {
			return true
		}
	}
	return false
}

// TestWaitIsWokenWithoutPolling checks that an allocation reaches a waiting
// agent at once: far sooner than the keepalive interval, which is the only
// timer a Wait stream has.
func TestWaitIsWokenWithoutPolling(t *testing.T) {
	h := harness.StartController(t, t.TempDir(), func(c *app.Config) { c.Server.KeepaliveInterval = time.Hour })
	op := h.Operator()
	ctx := context.Background()
	if _, err := op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "img", Url: "http://x/img", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + fmt.Sprintf("%064x", 2), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}
	a := h.StartAgent(t, harness.UUID(t.Name(), 0), 0)
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, 1, 30*time.Second)
	var once sync.Once
	start := time.Now()
	if _, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.UUID, ImageId: "img"}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		runs, _ := a.Install.Runs()
		if len(runs) == 0 {
			return fmt.Errorf("install not received yet")
		}
		once.Do(func() { t.Logf("allocate → executed in %v", time.Since(start)) })
		return nil
	})
}
