package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The controller keeps its state in PostgreSQL with --store postgres://...:
// real agents reach Ready, the controller is killed and restarted on the
// same database, and they are Ready again with their history; a controller
// with another data directory's keys is refused; a PostgreSQL URL that
// cannot be reached is a clear error at start.
func TestControllerOnPostgres(t *testing.T) {
	c := pgtest.New(t)
	url := c.URL(c.NewDatabase(t))
	h := harness.StartController(t, t.TempDir(), func(cfg *app.Config) { cfg.Store = url })
	op := h.Operator()
	const n = 3
	for i := range n {
		h.StartAgent(t, harness.UUID(t.Name(), i), i)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, n, 60*time.Second)
	// A controller from another data directory (other CA and keys) is
	// refused: it could not read what this one sealed.
	stranger := app.Defaults()
	stranger.DataDir, stranger.Listen, stranger.Store = t.TempDir(), "127.0.0.1:0", url
	if _, err := app.Start(context.Background(), stranger, harness.Logger(t)); err == nil || !strings.Contains(err.Error(), "must share the CA and keys") {
		t.Errorf("a controller with other keys on the database: %v", err)
	}
	h.Stop()
	h.Start()
	op = h.Operator()
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, n, 30*time.Second)
	r, err := op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: harness.UUID(t.Name(), 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetEvents()) < 2 {
		t.Errorf("history after the restart: %v", r.GetEvents())
	}

	// Nobody listens there: a clear error naming the store, password hidden.
	bad := app.Defaults()
	bad.DataDir, bad.Listen, bad.StoreWait = t.TempDir(), "127.0.0.1:0", 0
	bad.Store = "postgres://anvil:secret@127.0.0.1:1/nope?sslmode=disable&connect_timeout=2"
	_, err = app.Start(context.Background(), bad, harness.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "open postgres") || strings.Contains(err.Error(), "secret") {
		t.Errorf("start on an unreachable PostgreSQL: %v", err)
	}
	bad.Store = "mysql://root:secret@db/anvil"
	if _, err := app.Start(context.Background(), bad, harness.Logger(t)); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("start with a foreign store URL: %v", err)
	}
}

// Two replicas on one database: an allocation made through B reaches the
// agent waiting on A at once (the change feed, not a poll: idle Wait
// streams read nothing until woken); a watcher on B sees every event the
// agent reported to A, in order, without gaps or repeats; exactly one
// replica leads the periodic work, and the lead moves when it stops.
func TestReplicasOnPostgres(t *testing.T) {
	pg := pgtest.New(t)
	url := pg.URL(pg.NewDatabase(t))
	dir := t.TempDir()
	a := harness.StartController(t, dir, func(c *app.Config) { c.Store = url })
	b := harness.StartController(t, dir, func(c *app.Config) { c.Store = url }) // same keys and CA
	opA, opB := a.Operator(), b.Operator()
	ctx := context.Background()
	agent := a.StartAgent(t, harness.UUID(t.Name(), 0), 0)
	waitStates(t, opB, anvilv1.MachineState_MACHINE_STATE_READY, 1, 60*time.Second)

	watch, err := opB.Machines.WatchEvents(ctx, &anvilv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []*anvilv1.Event
	watched := make(chan error, 1)
	go func() {
		for {
			e, err := watch.Recv()
			if err != nil {
				watched <- err
				return
			}
			if e.GetSeq() > 0 {
				got = append(got, e)
			}
			if e.GetType() == anvilv1.EventType_EVENT_TYPE_BOOTING {
				watched <- nil
				return
			}
		}
	}()
	if _, err := opB.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "img", Url: "http://images.example/img.raw", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + strings.Repeat("ab", 32), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}
	if n, m := a.Running().WaitStreams(), b.Running().WaitStreams(); n != 1 || m != 0 {
		t.Fatalf("Wait streams: %d on A, %d on B; want the agent on A", n, m)
	}
	t0 := time.Now()
	if _, err := opB.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: agent.UUID, ImageId: "img", Hostname: "web-1"}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() error {
		if agent.Install.Last() == nil {
			return errors.New("no install received by the agent on A")
		}
		return nil
	})
	t.Logf("allocated through B, install executed by the agent on A after %v", time.Since(t0).Round(time.Millisecond))
	select {
	case err := <-watched:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher on B did not see the agent's BOOTING report to A")
	}
	stored, err := opA.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: agent.UUID})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range stored.GetEvents() {
		want = append(want, e.GetSeq())
		if e.GetType() == anvilv1.EventType_EVENT_TYPE_BOOTING {
			break
		}
	}
	var have []int64
	for _, e := range got {
		have = append(have, e.GetSeq())
	}
	if !slices.Equal(have, want) {
		t.Errorf("watcher on B saw seqs %v, the store has %v", have, want)
	}

	leaders := func() (int, *harness.Controller) {
		n, which := 0, (*harness.Controller)(nil)
		for _, h := range []*harness.Controller{a, b} {
			if r := h.Running(); r != nil && r.Leader() {
				n, which = n+1, h
			}
		}
		return n, which
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if n, _ := leaders(); n != 1 {
			return fmt.Errorf("%d leaders", n)
		}
		return nil
	})
	_, lead := leaders()
	lead.Stop()
	other := map[*harness.Controller]*harness.Controller{a: b, b: a}[lead]
	harness.Eventually(t, 10*time.Second, func() error {
		if !other.Running().Leader() {
			return errors.New("the remaining replica does not lead")
		}
		return nil
	})
}

// A controller started while its PostgreSQL is down keeps trying (with
// --store-wait) and starts once the database is up.
func TestControllerWaitsForItsDatabase(t *testing.T) {
	pg := pgtest.New(t)
	url := pg.URL(pg.NewDatabase(t))
	if err := pg.Halt(); err != nil {
		t.Fatal(err)
	}
	cfg := app.Defaults()
	cfg.DataDir, cfg.Listen, cfg.Store, cfg.StoreWait = t.TempDir(), "127.0.0.1:0", url, 30*time.Second
	started := make(chan error, 1)
	go func() {
		c, err := app.Start(context.Background(), cfg, harness.Logger(t))
		if err == nil {
			err = c.Stop()
		}
		started <- err
	}()
	time.Sleep(3 * time.Second)
	select {
	case err := <-started:
		t.Fatalf("start returned while the database was down: %v", err)
	default:
	}
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start once the database is up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the controller did not start once its database was up")
	}
}

// Replica A caches the machine of a heartbeating credential; a
// registration through replica B replaces the credential, and A refuses
// the old one as soon as B's change reaches it (the cache lives 30 s
// without that).
func TestReplicasRefuseAReplacedHeartbeatCredential(t *testing.T) {
	pg := pgtest.New(t)
	url := pg.URL(pg.NewDatabase(t))
	dir := t.TempDir()
	a := harness.StartController(t, dir, func(c *app.Config) { c.Store = url })
	b := harness.StartController(t, dir, func(c *app.Config) { c.Store = url })
	ctx := context.Background()
	onA, onB := anvilv1.NewAgentServiceClient(a.Dial("")), anvilv1.NewAgentServiceClient(b.Dial(""))
	bearer := func(tok string) grpc.CallOption { return grpc.PerRPCCredentials(pki.Bearer(tok)) }
	uuid := harness.UUID(t.Name(), 0)
	req := &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 0)}
	r1, err := onA.Register(ctx, req, bearer(a.Running().BootToken))
	if err != nil {
		t.Fatal(err)
	}
	// A caches only while its feed is connected: without it this test
	// would not exercise the cache.
	harness.Eventually(t, 10*time.Second, func() error {
		if !a.Running().ChangesHeard() {
			return errors.New("A's change feed is not connected")
		}
		return nil
	})
	for range 3 {
		if _, err := onA.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(r1.GetCredential())); err != nil {
			t.Fatalf("heartbeat on A: %v", err)
		}
	}
	r2, err := onB.Register(ctx, req, bearer(r1.GetCredential()))
	if err != nil {
		t.Fatalf("register again through B: %v", err)
	}
	t0 := time.Now()
	harness.Eventually(t, 2*time.Second, func() error {
		_, err := onA.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(r1.GetCredential()))
		if status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("heartbeat on A with the replaced credential: %v, want Unauthenticated", err)
		}
		return nil
	})
	t.Logf("A refused the replaced credential %v after B's registration", time.Since(t0).Round(time.Millisecond))
	if _, err := onA.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(r2.GetCredential())); err != nil {
		t.Fatalf("heartbeat on A with the new credential: %v", err)
	}
}
