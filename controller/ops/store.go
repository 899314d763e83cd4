package ops

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anvil-metal/anvil/controller/store"
)

// Store returns st with every transaction timed in
// anvil_store_transaction_seconds{kind="write"|"read", outcome="ok"|"error"}:
// the store latency the controller's requests see, queueing for the
// writer (and, with replicas, the database's writer lock) included.
func (o *Ops) Store(st store.Store) store.Store { return &timedStore{Store: st, h: o.storeTx} }

type timedStore struct {
	store.Store
	h *prometheus.HistogramVec
}

func (t *timedStore) Tx(ctx context.Context, fn func(store.Tx) error) error {
	t0 := time.Now()
	err := t.Store.Tx(ctx, fn)
	t.h.WithLabelValues("write", outcome(err)).Observe(time.Since(t0).Seconds())
	return err
}

func (t *timedStore) View(ctx context.Context, fn func(store.Tx) error) error {
	t0 := time.Now()
	err := t.Store.View(ctx, fn)
	t.h.WithLabelValues("read", outcome(err)).Observe(time.Since(t0).Seconds())
	return err
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func newStoreTx() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "anvil_store_transaction_seconds",
		Help:    "Store transactions as the controller's requests see them (write: queueing for the writer included).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}, []string{"kind", "outcome"})
}
