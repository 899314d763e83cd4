package server

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// countingStore counts read and write transactions.
type countingStore struct {
	store.Store
	views, txs atomic.Int32
}

func (c *countingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	c.views.Add(1)
	return c.Store.View(ctx, fn)
}

func (c *countingStore) Tx(ctx context.Context, fn func(store.Tx) error) error {
	c.txs.Add(1)
	return c.Store.Tx(ctx, fn)
}

// startAgentAPI serves st's controller on a loopback port (without TLS)
// and returns it, an agent client and the context that carries a token.
func startAgentAPI(t *testing.T, st store.Store, cfg Config) (*Server, anvilv1.AgentServiceClient, func(tok string) context.Context) {
	t.Helper()
	s, err := New(st, Credentials{AdminTokens: []string{"admin-token-for-tests"}, BootTokens: []string{"boot-token-for-tests"}}, cfg,
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	g := s.NewGRPCServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln) //nolint:errcheck // stopped below
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	with := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(t.Context(), "authorization", pki.BearerScheme+" "+tok)
	}
	return s, anvilv1.NewAgentServiceClient(conn), with
}

// An idle agent's Wait stream costs no store read per keepalive: over
// twenty keepalives the store is read only when the stream opens; a queued
// instruction (a wake-up) is still delivered at once.
func TestIdleWaitReadsNothing(t *testing.T) {
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	cfg := DefaultConfig()
	cfg.KeepaliveInterval = 10 * time.Millisecond
	s, agent, with := startAgentAPI(t, cs, cfg)
	const id = "00000000-0000-4000-8000-0000000000a1"
	reg, err := agent.Register(with("boot-token-for-tests"), &anvilv1.RegisterRequest{Inventory: &anvilv1.Inventory{
		Product: &anvilv1.Product{Uuid: id}, Nics: []*anvilv1.NIC{{Name: "eth0", Mac: "52:54:00:00:00:a1"}},
		Disks: []*anvilv1.Disk{{Name: "vda", Path: "/dev/vda", SizeBytes: 8 << 30}}}})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := agent.Wait(with(reg.GetCredential()), &anvilv1.WaitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	in, err := stream.Recv() // the first keepalive: the stream has read what it needs
	if err != nil || in.GetKeepalive() == nil {
		t.Fatalf("first message %v %v, want a keepalive", in, err)
	}
	before := cs.views.Load()
	for range 20 {
		in, err := stream.Recv()
		if err != nil || in.GetKeepalive() == nil {
			t.Fatalf("message %v %v, want a keepalive", in, err)
		}
	}
	if got := cs.views.Load() - before; got != 0 {
		t.Errorf("%d store reads over 20 keepalives of an idle stream, want 0", got)
	}
	// Work still arrives at once: an install queued by an allocation.
	op := withOperator(t.Context(), operatorID{token: "0a1b2c3d", from: "192.0.2.7"})
	if _, err := (&imageAPI{Server: s}).CreateImage(op, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{Id: "img", Url: "http://images.example/img.raw",
		Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Checksum: "sha256:" + strings.Repeat("7", 64), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&machineAPI{Server: s}).AllocateMachine(op, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img", Hostname: "web-1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		in, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if in.GetInstall() != nil {
			return
		}
	}
	t.Fatal("the queued install did not arrive")
}
