package runner

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/ctrladdr"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// replica serves s over TLS on host (a loopback address) with a serving
// certificate of ca that names host (and the loopback names every serving
// certificate carries, not another replica's address).
func replica(t *testing.T, ca *pki.CA, host string, s *script) (string, *grpc.Server) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), host)
	certFile, keyFile, err := ca.EnsureServingCert(dir, []string{host})
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := pki.LoadServerTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)))
	anvilv1.RegisterAgentServiceServer(g, s)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return l.Addr().String(), g
}

// An agent given two replicas' addresses, pinning the CA by fingerprint as
// a booted agent does, verifies each against its own host: replica A's
// certificate names only 127.0.0.2, B's only 127.0.0.3. A dies while an
// instruction runs: the closing report is retried on B, the Wait stream
// re-opens on B, B's re-sent copy of the finished instruction is not run
// again, B's new instruction runs once, and the agent does not register
// again (its credential is still good).
func TestFailoverToAnotherReplica(t *testing.T) {
	ca, err := pki.EnsureCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	a := &script{perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-1")} }}
	b := &script{perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-1"), wipe("in-2")} }}
	addrA, srvA := replica(t, ca, "127.0.0.2", a)
	addrB, _ := replica(t, ca, "127.0.0.3", b)
	ex := &counter{fn: func(ctx context.Context, _ Progress) (Outcome, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return Outcome{}, ctx.Err()
		}
		return Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: "done"}, nil
	}}
	fp := ca.Fingerprint()
	r, err := New(Config{
		Controller: addrA + "," + addrB,
		TLSFor: func(name string) (*tls.Config, error) {
			return pki.ClientTLS(nil, fp, pki.WithServerName(name))
		},
		BootToken: "boot",
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return &anvilv1.Inventory{}, nil },
		Executors: Executors{Wipe: ex},
		Backoff:   backoff.Policy{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond},
	}, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithAddressOrder())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; r.Close() })

	// Running: A has the acknowledgement and the agent has A's answer.
	eventually(t, "in-1 running", func() bool { return ex.count("in-1") == 1 })
	srvA.Stop() // A dies with in-1 running and the agent's stream open
	close(release)
	types := func(s *script, id string) []anvilv1.EventType {
		var out []anvilv1.EventType
		for _, rep := range s.got() {
			if rep.GetInstructionId() == id {
				out = append(out, rep.GetType())
			}
		}
		return out
	}
	eventually(t, "in-1's closing report on B and in-2 done on B", func() bool {
		return slices.Equal(types(b, "in-1"), []anvilv1.EventType{anvilv1.EventType_EVENT_TYPE_WIPED}) &&
			slices.Equal(types(b, "in-2"), []anvilv1.EventType{anvilv1.EventType_EVENT_TYPE_WIPING, anvilv1.EventType_EVENT_TYPE_WIPED})
	})
	time.Sleep(100 * time.Millisecond) // room for a wrong second run
	if n1, n2 := ex.count("in-1"), ex.count("in-2"); n1 != 1 || n2 != 1 {
		t.Errorf("executions: in-1 %d, in-2 %d; want 1 each", n1, n2)
	}
	if got := types(a, "in-1"); !slices.Equal(got, []anvilv1.EventType{anvilv1.EventType_EVENT_TYPE_WIPING}) {
		t.Errorf("A's reports on in-1: %v", got)
	}
	a.mu.Lock()
	b.mu.Lock()
	regsA, regsB, streamsB := a.regs, b.regs, b.streams
	b.mu.Unlock()
	a.mu.Unlock()
	if regsA != 1 || regsB != 0 || streamsB == 0 {
		t.Errorf("registrations A %d, B %d (want 1, 0: the session moves, it is not renewed); Wait streams on B %d", regsA, regsB, streamsB)
	}
}

// A fixed list goes to the runner's own resolver with every address
// verified against its own host; one DNS name goes to gRPC's dns resolver.
func TestTarget(t *testing.T) {
	l, err := ctrladdr.Parse("10.0.2.2:7443,[fd00::4]:7443,b.example:7443")
	if err != nil {
		t.Fatal(err)
	}
	tgt, res := target(l)
	if tgt != "anvil-controllers:///10.0.2.2:7443" || res == nil || res.Scheme() != resolverScheme {
		t.Fatalf("target(%q) = %q, %v", l, tgt, res)
	}
	var got [][2]string
	for _, ep := range endpoints(l) {
		for _, a := range ep.Addresses {
			got = append(got, [2]string{a.Addr, a.ServerName})
		}
	}
	want := [][2]string{{"10.0.2.2:7443", "10.0.2.2"}, {"[fd00::4]:7443", "fd00::4"}, {"b.example:7443", "b.example"}}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints(%q) = %q, want %q", l, got, want)
	}
	one, err := ctrladdr.Parse("anvil.example.net:7443")
	if err != nil {
		t.Fatal(err)
	}
	if tgt, res := target(one); tgt != "dns:///anvil.example.net:7443" || res != nil {
		t.Errorf("target(%q) = %q, %v; want gRPC's dns resolver", one, tgt, res)
	}
}

// A list the agent cannot use is refused before anything is dialled.
func TestConfigRefusesBadControllerLists(t *testing.T) {
	for _, c := range []string{"", "10.0.2.2:7443,10.0.2.2:7443", "10.0.2.2", "a:1;b:2"} {
		_, err := New(Config{Controller: c, TLS: &tls.Config{}, BootToken: "b",
			Inventory: func(context.Context) (*anvilv1.Inventory, error) { return nil, nil }})
		if err == nil {
			t.Errorf("New with controller %q accepted", c)
		}
	}
}
