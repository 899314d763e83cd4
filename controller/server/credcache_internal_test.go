package server

import (
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestCredCache(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	var c credCache
	h1, h2 := []byte("hash-1"), []byte("hash-2")
	if _, ok := c.get(h1, t0); ok {
		t.Fatal("empty cache hit")
	}
	c.put(h1, "m1", c.generation(), t0)
	if id, ok := c.get(h1, t0.Add(credTTL-time.Nanosecond)); !ok || id != "m1" {
		t.Fatalf("get = %q, %v; want m1", id, ok)
	}
	if _, ok := c.get(h1, t0.Add(credTTL)); ok {
		t.Error("an entry credTTL old still hits")
	}
	if _, ok := c.get(h1, t0.Add(-time.Second)); ok {
		t.Error("an entry from the future (clock stepped back) hits")
	}
	// A new credential of the machine replaces the old one.
	c.put(h2, "m1", c.generation(), t0)
	if _, ok := c.get(h1, t0); ok {
		t.Error("the machine's previous credential still hits")
	}
	// A wake of the machine drops it; of another machine, not.
	c.put(h1, "m2", c.generation(), t0)
	c.forget("m1")
	if _, ok := c.get(h2, t0); ok {
		t.Error("hit after the machine was woken")
	}
	if _, ok := c.get(h1, t0); !ok {
		t.Error("a wake of m1 dropped m2")
	}
	// A lookup that raced with a wake caches nothing.
	gen := c.generation()
	c.forget("m3")
	c.put(h2, "m1", gen, t0)
	if _, ok := c.get(h2, t0); ok {
		t.Error("a lookup older than a wake was cached")
	}
	c.clear()
	if _, ok := c.get(h1, t0); ok {
		t.Error("hit after clear")
	}
	gen = c.generation()
	c.clear()
	c.put(h1, "m2", gen, t0)
	if _, ok := c.get(h1, t0); ok {
		t.Error("a lookup older than a clear was cached")
	}
}

// A heartbeat's credential is looked up in the store once, then served
// from the cache until the machine is woken (its credential may have
// changed) or the change feed is not heard; every other agent call reads
// the store each time.
func TestHeartbeatCredentialsAreCached(t *testing.T) {
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vc := &countingStore{Store: st} // idle_internal_test.go
	var heard atomic.Bool
	heard.Store(true)
	s, err := New(vc, Credentials{AdminTokens: []string{"admin-token-for-tests"}, BootTokens: []string{"boot-token-for-tests"}}, DefaultConfig(),
		WithLogger(slog.New(slog.DiscardHandler)), WithChangesHeard(heard.Load))
	if err != nil {
		t.Fatal(err)
	}
	const cred = "anv_machine-credential-for-tests"
	if err := st.Tx(t.Context(), func(tx store.Tx) error {
		return tx.CreateMachine(t.Context(), &store.Machine{ID: "m1", UUID: "u1", CredentialHash: pki.HashToken(cred)})
	}); err != nil {
		t.Fatal(err)
	}
	agent := &agentAPI{Server: s}
	call := func(method string) (string, int64) {
		t.Helper()
		before := vc.views.Load()
		ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+cred))
		ctx, err := agent.AuthFuncOverride(ctx, method)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return machineFrom(ctx), int64(vc.views.Load() - before)
	}
	hb := anvilv1.AgentService_Heartbeat_FullMethodName
	if id, reads := call(hb); id != "m1" || reads != 1 {
		t.Fatalf("first heartbeat: machine %q after %d store reads, want m1 after 1", id, reads)
	}
	for range 3 {
		if id, reads := call(hb); id != "m1" || reads != 0 {
			t.Fatalf("cached heartbeat: machine %q after %d store reads, want m1 after 0", id, reads)
		}
	}
	if _, reads := call(anvilv1.AgentService_Report_FullMethodName); reads != 1 {
		t.Errorf("Report read the store %d times, want 1 (only heartbeats are cached)", reads)
	}
	s.wake("m1")
	if _, reads := call(hb); reads != 1 {
		t.Errorf("heartbeat after a wake: %d store reads, want 1", reads)
	}
	heard.Store(false)
	for range 2 {
		if _, reads := call(hb); reads != 1 {
			t.Errorf("heartbeat while changes are not heard: %d store reads, want 1", reads)
		}
	}
	// The credential changes (as a registration does: committed, then the
	// machine woken): the old one is refused at once.
	heard.Store(true)
	call(hb)
	if err := s.commit(t.Context(), func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachineLight(t.Context(), "m1")
		if err != nil {
			return err
		}
		m.CredentialHash = pki.HashToken("anv_another-credential")
		fx.notify = append(fx.notify, m.ID)
		return tx.UpdateMachine(t.Context(), m)
	}); err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+cred))
	if _, err := agent.AuthFuncOverride(ctx, hb); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("heartbeat with the replaced credential: %v, want Unauthenticated", err)
	}
}
