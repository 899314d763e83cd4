package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/runner"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/server"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// replicaOf is one controller replica in this process: its own
// server.Server (its own hub) and gRPC server, on its own loopback address
// with a serving certificate of the shared CA that names that address.
type replicaOf struct {
	srv  *server.Server
	grpc *grpc.Server
	addr string
	op   harness.Operator
}

// acked is a Recorder whose outcome says when the controller has the
// closing event (Outcome.Then runs after it is acknowledged).
type acked struct {
	*harness.Recorder
	done chan string
}

func (a acked) Execute(ctx context.Context, in *anvilv1.Instruction, p runner.Progress) (runner.Outcome, error) {
	out, err := a.Recorder.Execute(ctx, in, p)
	out.Then = func(context.Context) error { a.done <- in.GetId(); return nil }
	return out, err
}

// startReplica serves a replica on host:0 over st, as controller/app.Start
// assembles one.
func startReplica(t *testing.T, st *sqlstore.Store, ca *pki.CA, host string, creds server.Credentials) *replicaOf {
	t.Helper()
	certFile, keyFile, err := ca.EnsureServingCert(filepath.Join(t.TempDir(), host), []string{host})
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := pki.LoadServerTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.KeepaliveInterval = time.Hour // an idle stream costs nothing: only a wake-up delivers
	srv, err := server.New(st, creds, cfg, server.WithLogger(harness.Logger(t).With("replica", host)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g := srv.NewGRPCServer(grpc.Creds(credentials.NewTLS(srvTLS)))
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return &replicaOf{srv: srv, grpc: g, addr: l.Addr().String(), op: harness.OperatorOf(harness.DialAt(t, l.Addr().String(), ca.CertPEM(), creds.AdminTokens[0]))}
}

// TestAgentFailsOverToAnotherReplica: two controller replicas share one
// store; a real agent runner is given both addresses and pins the CA by
// fingerprint, as a network-booted agent does. It registers and installs
// through replica A; A is stopped hard while the agent waits. The agent
// re-opens its Wait stream on B within a few seconds, without registering
// again; an erase queued through B's API (B's own hub wakes the stream)
// reaches it and runs once; the install it finished on A is not run again.
func TestAgentFailsOverToAnotherReplica(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca, err := pki.EnsureCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "anvil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	var creds server.Credentials
	for _, tok := range []*string{new(string), new(string), &creds.Keys.BootToken, &creds.Keys.PhoneHome, &creds.Keys.BMC} {
		if *tok, err = pki.NewToken(); err != nil {
			t.Fatal(err)
		}
		if len(creds.AdminTokens) == 0 {
			creds.AdminTokens = []string{*tok}
		} else if len(creds.BootTokens) == 0 {
			creds.BootTokens = []string{*tok}
		}
	}
	a := startReplica(t, st, ca, "127.0.0.2", creds)
	b := startReplica(t, st, ca, "127.0.0.3", creds)
	if _, err := a.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "img", Url: "http://images.example/img.raw", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + fmt.Sprintf("%064x", 3), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}

	uuid := harness.UUID(t.Name(), 0)
	inv := harness.Inventory(uuid, 0)
	install := &harness.Recorder{Close: anvilv1.EventType_EVENT_TYPE_BOOTING}
	installed := make(chan string, 4)
	wipe := &harness.Recorder{Close: anvilv1.EventType_EVENT_TYPE_WIPED}
	fp := ca.Fingerprint()
	rn, err := runner.New(runner.Config{
		Controller: a.addr + "," + b.addr,
		TLSFor: func(name string) (*tls.Config, error) {
			return pki.ClientTLS(nil, fp, pki.WithServerName(name))
		},
		BootToken: creds.BootTokens[0], AgentVersion: "failover",
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil },
		Executors: runner.Executors{Install: acked{install, installed}, Wipe: wipe},
		Backoff:   backoff.Policy{Base: 50 * time.Millisecond, Cap: time.Second},
	}, runner.WithLogger(harness.Logger(t).With("agent", 0)), runner.WithAddressOrder()) // on A first
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rn.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done; rn.Close() })

	waitStates(t, a.op, anvilv1.MachineState_MACHINE_STATE_READY, 1, 30*time.Second)
	if n, m := a.srv.WaitStreams(), b.srv.WaitStreams(); n != 1 || m != 0 {
		t.Fatalf("Wait streams: %d on A, %d on B; want the agent on A", n, m)
	}
	if _, err := a.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img", Hostname: "web-1"}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, a.op, anvilv1.MachineState_MACHINE_STATE_BOOTING, 1, 30*time.Second)
	select {
	case <-installed:
	case <-time.After(10 * time.Second):
		t.Fatal("the install's closing event was not acknowledged")
	}
	first, _ := install.Runs()

	// A dies with the agent waiting on it, everything reported.
	a.grpc.Stop()
	died := time.Now()
	const bound = 5 * time.Second
	harness.Eventually(t, bound, func() error {
		if n := b.srv.WaitStreams(); n != 1 {
			return fmt.Errorf("%d Wait streams on B", n)
		}
		return nil
	})
	t.Logf("the agent waits on B %v after A stopped", time.Since(died).Round(time.Millisecond))

	// Work queued through B reaches the agent on B.
	if _, err := b.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, b.op, anvilv1.MachineState_MACHINE_STATE_READY, 1, 10*time.Second)

	installs, order := install.Runs()
	if len(first) != 1 || len(installs) != 1 || len(order) != 1 {
		t.Errorf("installs executed: %v before the failover, %v in all (order %v); want the one install, once", first, installs, order)
	}
	wipes, worder := wipe.Runs()
	if len(wipes) != 1 || len(worder) != 1 {
		t.Errorf("erases executed after the failover: %v (order %v); want one, once", wipes, worder)
	}
	evs, err := b.op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: uuid})
	if err != nil {
		t.Fatal(err)
	}
	var types []anvilv1.EventType
	for _, e := range evs.GetEvents() {
		types = append(types, e.GetType())
	}
	if n := countType(evs.GetEvents(), anvilv1.EventType_EVENT_TYPE_REGISTERING); n != 1 {
		t.Errorf("%d registrations in %v; the agent moved its session to B, it does not register again", n, types)
	}
	if err := inOrder(types, story); err != nil {
		t.Errorf("history: %v", err)
	}
}
