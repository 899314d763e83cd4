package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// writeCounter counts write transactions and last-seen row writes.
type writeCounter struct {
	store.Store
	txs, touches atomic.Int64
}

func (w *writeCounter) Tx(ctx context.Context, fn func(store.Tx) error) error {
	w.txs.Add(1)
	return w.Store.Tx(ctx, func(tx store.Tx) error { return fn(touchCounter{tx, &w.touches}) })
}

type touchCounter struct {
	store.Tx
	n *atomic.Int64
}

func (t touchCounter) TouchMachine(ctx context.Context, id string, at time.Time) error {
	t.n.Add(1)
	return t.Tx.TouchMachine(ctx, id, at)
}

// Heartbeats are written in batches: 200 agents heartbeating every 10 s
// for 10 simulated minutes cost a write transaction per 100 rows of a
// flush that has something to write and one row per machine every 20 s,
// instead of a transaction per heartbeat (12,000 here); the controller still sees every
// heartbeat at once, and a flush brings the stored LastSeen to within the
// lag of the latest heartbeat. For 10,000 agents that is 500 row writes in
// 5 transactions a second (was 1,000 transactions a second).
func TestHeartbeatsAreWrittenInBatches(t *testing.T) {
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	wc := &writeCounter{Store: st}
	cfg := DefaultConfig()
	s, err := New(wc, Credentials{AdminTokens: []string{"admin-token-for-tests"}, BootTokens: []string{"boot-token-for-tests"}}, cfg,
		WithLogger(slog.New(slog.DiscardHandler)), WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	const agents = 200
	ids := make([]string, agents)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%03d", i)
		if err := st.Tx(t.Context(), func(tx store.Tx) error {
			return tx.CreateMachine(t.Context(), &store.Machine{ID: ids[i], UUID: ids[i], CreatedAt: now, LastSeen: now})
		}); err != nil {
			t.Fatal(err)
		}
	}
	agent := &agentAPI{Server: s}
	const run = 10 * time.Minute
	heartbeats := 0
	for step := time.Duration(0); step < run; step += cfg.SeenFlushInterval {
		mu.Lock()
		now = now.Add(cfg.SeenFlushInterval)
		mu.Unlock()
		if step%cfg.HeartbeatInterval == 0 {
			for _, id := range ids {
				ctx := context.WithValue(t.Context(), machineKey{}, caller{id: id})
				if _, err := agent.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}); err != nil {
					t.Fatal(err)
				}
				heartbeats++
			}
		}
		if _, err := s.FlushSeen(t.Context(), false); err != nil {
			t.Fatal(err)
		}
	}
	flushes := int64(run / cfg.SeenFlushInterval)
	rowsBound := int64(agents) * int64(run/(cfg.SeenFlushLag+cfg.SeenFlushInterval)+1)
	t.Logf("%d heartbeats: %d write transactions, %d last-seen rows (bound %d)", heartbeats, wc.txs.Load(), wc.touches.Load(), rowsBound)
	perFlush := int64((agents + seenChunk - 1) / seenChunk)
	if got := wc.txs.Load(); got > flushes*perFlush {
		t.Errorf("%d write transactions for %d heartbeats over %d flushes, want at most %d per flush", got, heartbeats, flushes, perFlush)
	}
	if got := wc.touches.Load(); got > rowsBound || got < int64(agents) {
		t.Errorf("%d last-seen rows written, want between %d and %d", got, agents, rowsBound)
	}
	// Everything the controller decides reads the newest heartbeat; the
	// stored one lags by less than the lag plus one flush interval.
	var m *store.Machine
	if err := st.View(t.Context(), func(tx store.Tx) error { m, err = tx.GetMachine(t.Context(), ids[0]); return err }); err != nil {
		t.Fatal(err)
	}
	last, _ := s.seen.get(ids[0])
	if !s.seenAt(m).Equal(last.at) {
		t.Errorf("seenAt %v, want the last heartbeat %v", s.seenAt(m), last.at)
	}
	if lag := last.at.Sub(m.LastSeen); lag >= cfg.SeenFlushLag+cfg.SeenFlushInterval {
		t.Errorf("stored LastSeen lags the last heartbeat by %v", lag)
	}
	// At shutdown everything is written.
	if _, err := s.FlushSeen(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if err := st.View(t.Context(), func(tx store.Tx) error { m, err = tx.GetMachine(t.Context(), ids[0]); return err }); err != nil {
		t.Fatal(err)
	}
	if !m.LastSeen.Equal(last.at) {
		t.Errorf("after the final flush LastSeen %v, want %v", m.LastSeen, last.at)
	}
}
