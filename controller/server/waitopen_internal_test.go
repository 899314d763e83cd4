package server

import (
	"context"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// faultyStore's failAt-th read transaction (counting from 1) loses its
// database connection at its first credential lookup.
type faultyStore struct {
	*countingStore
	failAt atomic.Int32
}

func (f *faultyStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if f.views.Load()+1 != f.failAt.Load() {
		return f.countingStore.View(ctx, fn)
	}
	return f.countingStore.View(ctx, func(tx store.Tx) error { return fn(lostTx{tx}) })
}

type lostTx struct{ store.Tx }

func (lostTx) MachineIDByCredential(context.Context, []byte) (string, error) {
	return "", fmt.Errorf("machine by credential: %w", driver.ErrBadConn)
}

// A Wait stream opens in one write transaction right after its agent
// registered here (WAITING is recorded: the machine is Ready); a reconnect reads and writes
// nothing, so a reconnect storm does not queue on the writer; and a store
// fault while a stream opens is Unavailable (the agent retries), never
// Unauthenticated (which makes it drop its work and register again).
func TestWaitOpen(t *testing.T) {
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &faultyStore{countingStore: &countingStore{Store: st}}
	cfg := DefaultConfig()
	cfg.KeepaliveInterval = 10 * time.Millisecond
	_, agent, with := startAgentAPI(t, fs, cfg)
	const id = "00000000-0000-4000-8000-0000000000b1"
	reg, err := agent.Register(with("boot-token-for-tests"), &anvilv1.RegisterRequest{Inventory: &anvilv1.Inventory{
		Product: &anvilv1.Product{Uuid: id}, Nics: []*anvilv1.NIC{{Name: "eth0", Mac: "52:54:00:00:00:b1"}},
		Disks: []*anvilv1.Disk{{Name: "vda", Path: "/dev/vda", SizeBytes: 8 << 30}}}})
	if err != nil {
		t.Fatal(err)
	}
	open := func() (views, txs int32, err error) {
		t.Helper()
		v0, t0 := fs.views.Load(), fs.txs.Load()
		ctx, cancel := context.WithCancel(with(reg.GetCredential()))
		defer cancel()
		stream, err := agent.Wait(ctx, &anvilv1.WaitRequest{})
		if err != nil {
			return 0, 0, err
		}
		// The first keepalive comes after the open's reads; a failed open
		// ends the stream with its status instead.
		if in, err := stream.Recv(); err != nil || in.GetKeepalive() == nil {
			return 0, 0, fmt.Errorf("first message %v: %w", in, err)
		}
		return fs.views.Load() - v0, fs.txs.Load() - t0, nil
	}
	// The authenticator reads the credential (one View) in every case.
	views, txs, err := open()
	if err != nil || views != 1 || txs != 1 {
		t.Fatalf("first open after registering: %d reads, %d writes, %v; want the credential read and one write", views, txs, err)
	}
	var m *store.Machine
	if err := st.View(t.Context(), func(tx store.Tx) (err error) { m, err = tx.GetMachineLight(t.Context(), id); return err }); err != nil {
		t.Fatal(err)
	}
	if m.Status.State != anvilv1.MachineState_MACHINE_STATE_READY {
		t.Fatalf("after the first open the machine is %v, want READY (the WAITING event recorded)", m.Status.State)
	}
	views, txs, err = open()
	if err != nil || views != 2 || txs != 0 {
		t.Fatalf("reconnect: %d reads, %d writes, %v; want two reads (credential, stream) and no write", views, txs, err)
	}
	// The authenticator's read of the credential goes through; the
	// stream's own read fails.
	fs.failAt.Store(fs.views.Load() + 2)
	_, _, err = open()
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("a store fault while the stream opens: %v (%s), want Unavailable", err, code)
	}
}
