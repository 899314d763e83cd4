package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/anvil-metal/anvil/controller/store"
)

// maxBatch bounds how many write transactions share one commit.
const maxBatch = 64

// Group commit. SQLite has one writer and a commit costs the same whether it
// carries one transaction or sixty: the WAL frames of shared pages (indexes,
// table leaves) are written once. So concurrent Tx calls share one SQLite
// transaction, each isolated in its own SAVEPOINT: a caller whose fn fails
// or panics rolls back to its savepoint, leaving the others' work intact.
//
// Each fn runs on its caller's goroutine while the caller holds the write
// lock. When it is done and other writers are queued, the caller hands the
// open transaction to the next one and waits for the commit; the last
// writer of a batch (nobody queued, or the batch full) commits and wakes
// the others. A Tx therefore returns only once its writes are committed, or
// with the error that kept them from being committed.
type writer struct {
	mu      sync.Mutex
	waiting atomic.Int32
	cur     *batch
}

type batch struct {
	tx   *sql.Tx
	n    int
	done chan struct{}
	err  error // commit error, set before done is closed
}

const (
	spBegin    = "SAVEPOINT anvil_tx"
	spRollback = "ROLLBACK TO anvil_tx"
	spRelease  = "RELEASE anvil_tx"
)

// Tx runs fn in a write transaction. It commits when fn returns nil;
// otherwise its writes are rolled back and fn's error is returned as it is.
// When fn panics (or calls runtime.Goexit) its writes are rolled back and
// the panic goes on.
func (s *Store) Tx(ctx context.Context, fn func(store.Tx) error) error {
	w := &s.w
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	if err := ctx.Err(); err != nil {
		s.handOff(false)
		return err
	}
	b := w.cur
	if b == nil {
		sqlTx, err := s.write.BeginTx(context.Background(), nil)
		if err != nil {
			w.mu.Unlock()
			return fmt.Errorf("begin transaction: %w", err)
		}
		b = &batch{tx: sqlTx, done: make(chan struct{})}
		w.cur = b
		if s.d.lockWrites != "" {
			if _, err := sqlTx.ExecContext(context.Background(), s.d.lockWrites); err != nil {
				return s.abort(b, fmt.Errorf("take the writer lock: %w", err))
			}
		}
	}
	b.n++
	if _, err := b.tx.ExecContext(context.Background(), spBegin); err != nil {
		return s.abort(b, fmt.Errorf("savepoint: %w", err))
	}
	returned := false
	defer func() {
		if returned {
			return
		}
		// fn panicked or called runtime.Goexit: undo its writes, keep
		// the batch going for the others, and let the panic continue.
		if err := s.endSavepoint(b, true); err != nil {
			_ = s.abort(b, err)
			return
		}
		s.handOff(false)
	}()
	fnErr := fn(&tx{d: s.d, tx: b.tx, prepared: s.wstmts, origin: s.origin, feedKey: s.feedKey, inv: s.inv, detach: true})
	returned = true
	if err := s.endSavepoint(b, fnErr != nil); err != nil {
		return errors.Join(fnErr, s.abort(b, err))
	}
	if err := s.handOff(true); fnErr == nil {
		return err
	}
	return fnErr
}

// endSavepoint releases the caller's savepoint, rolling back to it first
// when its fn failed.
func (s *Store) endSavepoint(b *batch, rollback bool) error {
	if rollback {
		if _, err := b.tx.ExecContext(context.Background(), spRollback); err != nil {
			return fmt.Errorf("rollback to savepoint: %w", err)
		}
	}
	if _, err := b.tx.ExecContext(context.Background(), spRelease); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// handOff is called with the write lock held, after the caller's fn. If
// writers are queued and the batch has room, the open transaction passes to
// them; otherwise the batch commits. With wait, the caller then waits for
// the batch's commit and gets its error.
func (s *Store) handOff(wait bool) error {
	w := &s.w
	b := w.cur
	if b == nil { // the caller only checked its context; nothing is open
		w.mu.Unlock()
		return nil
	}
	if w.waiting.Load() > 0 && b.n < maxBatch {
		w.mu.Unlock()
		if !wait {
			return nil
		}
		<-b.done
		return b.err
	}
	w.cur = nil
	if err := b.tx.Commit(); err != nil {
		b.err = fmt.Errorf("commit: %w", err)
	}
	close(b.done)
	w.mu.Unlock()
	return b.err
}

// abort rolls the whole batch back after the transaction itself failed
// (a savepoint could not be set or undone): nothing of it is committed.
func (s *Store) abort(b *batch, cause error) error {
	w := &s.w
	w.cur = nil
	err := fmt.Errorf("write transaction aborted: %w", cause)
	if rbErr := b.tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
		err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
	}
	b.err = err
	close(b.done)
	w.mu.Unlock()
	return err
}
