// Package sqlstore implements store.Store on database/sql, with SQL written
// once for SQLite and PostgreSQL: queries use "?" placeholders, rebound per
// dialect, and the few type differences are tokens in the migrations.
// OpenSQLite uses the pure-Go driver modernc.org/sqlite, OpenPostgres
// jackc/pgx (postgres.go).
//
// # SQLite
//
// Every connection gets, through _pragma DSN parameters, WAL journaling,
// busy_timeout, foreign_keys=ON and synchronous=NORMAL (durable across
// application crashes; a power loss can lose the last transactions but never
// corrupts the file).
//
// SQLite allows one writer at a time, so writes are serialized in Go rather
// than by SQLite's lock: Store.Tx runs on a separate *sql.DB with a single
// connection whose transactions begin with BEGIN IMMEDIATE (_txlock), without
// SQLITE_BUSY and without the deadlock of two deferred transactions both
// upgrading to write. Concurrent writers share one commit (group commit, see
// batch.go), each in its own savepoint.
// Store.View runs on a pool of read connections opened with query_only, in
// read-only transactions; in WAL mode readers see a consistent snapshot and
// neither block nor are blocked by the writer. Transactions must not nest: a
// Tx inside a Tx waits forever for the single write connection.
//
// Hot statements are prepared once per connection at Open.
//
// # Schema
//
// The schema is versioned by the embedded migrations/NNNN_*.sql files,
// recorded in schema_migrations(version, applied_at) and applied at Open,
// each in its own transaction. See migrations/0001_initial.sql and codec.go
// for how values are encoded. A machine's inventories live in their own
// table (migration 0007), zstd-compressed (inventory.go), and are read
// only when the machine is read whole: store.Machine.Light reads and
// writes leave them alone.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/anvil-metal/anvil/controller/store"
)

// Store is a store.Store on a SQL database. It is safe for concurrent use.
type Store struct {
	d     *dialect
	write *sql.DB
	read  *sql.DB
	// ckpt is the checkpointer's own connection: WAL checkpoints run in
	// the background (passive: they never block the writer or readers)
	// instead of inside whichever commit crossed the autocheckpoint mark.
	ckpt *sql.DB
	// PostgreSQL replicas (replica.go, feed.go): pgcfg opens the feed's
	// and the session's own connections; origin tells this store's
	// announcements from the others'; sess holds the schema and leader
	// locks.
	pgcfg  *pgx.ConnConfig
	origin string
	// feedKey authenticates change announcements; forged counts the
	// notifications dropped for a bad MAC (lastForgedLog: Follow's only).
	feedKey           []byte
	forged            atomic.Int64
	lastForgedLog     time.Time
	log               *slog.Logger
	sess              *session
	feedUp, following atomic.Bool
	stopCkpt          context.CancelFunc
	ckptDone          chan struct{}
	closeOnce         sync.Once
	closeErr          error
	// w batches concurrent write transactions into one commit (batch.go).
	w writer
	// inv compresses the stored inventories (inventory.go).
	inv *invCodec
	// wstmts and rstmts are the prepared statements of write and read, by
	// query text before rebinding. Built at Open, read-only afterwards.
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt
}

var _ store.Store = (*Store)(nil)

// Option configures OpenSQLite.
type Option func(*options)

type options struct {
	busyTimeout     time.Duration
	readConns       int
	logger          *slog.Logger
	checkpointEvery time.Duration
	// feedKey signs and checks change announcements (WithFeedKey).
	feedKey string
	// idleInTx is how long PostgreSQL lets a session idle inside a
	// transaction before it ends it (sessionLimits).
	idleInTx time.Duration
	// migrations replace the embedded ones (tests of PostgreSQL replicas
	// of another schema version).
	migrations []migration
}

// WithCheckpointInterval sets how often the WAL is checkpointed in the
// background (default 1 s).
func WithCheckpointInterval(d time.Duration) Option {
	return func(o *options) { o.checkpointEvery = d }
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing with SQLITE_BUSY (default 5s). Writers of
// this Store never wait on each other's lock: they are serialized in Go.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = d }
}

// WithReadConns sets the size of the read connection pool used by View
// (default: the number of CPUs, at least 4).
func WithReadConns(n int) Option {
	return func(o *options) { o.readConns = n }
}

// WithFeedKey sets the key that authenticates change announcements
// between replicas on PostgreSQL (feed.go); every replica needs the same
// one. At least 16 bytes.
func WithFeedKey(key string) Option {
	return func(o *options) { o.feedKey = key }
}

// WithLogger sets the logger for schema migrations (default: slog.Default).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// OpenSQLite opens, creating it if needed, the SQLite database at path and
// migrates its schema to the newest version this binary knows. It fails with
// ErrSchemaTooNew when the database is newer than that. path is a file name;
// in-memory databases are refused because the read and write pools must
// share one database.
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{busyTimeout: 5 * time.Second, readConns: max(4, runtime.NumCPU()), logger: slog.Default(), checkpointEvery: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case path == "":
		return nil, errors.New("open sqlite: empty path")
	case path == ":memory:" || strings.HasPrefix(path, "file:") || strings.Contains(path, "?"):
		return nil, fmt.Errorf("open sqlite %q: want a plain file path (no URI, no query, not in-memory)", path)
	case o.readConns < 1:
		return nil, fmt.Errorf("open sqlite %q: read connections %d, want at least 1", path, o.readConns)
	case o.checkpointEvery <= 0:
		return nil, fmt.Errorf("open sqlite %q: checkpoint interval %s must be positive", path, o.checkpointEvery)
	case o.busyTimeout < 0:
		return nil, fmt.Errorf("open sqlite %q: negative busy timeout %s", path, o.busyTimeout)
	}
	s, err := openSQLite(ctx, path, o)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	return s, nil
}

// role is what a connection pool is for.
type role int

const (
	roleWrite role = iota
	roleRead
	roleCheckpoint
)

func sqliteDSN(path string, busyTimeout time.Duration, r role) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", "synchronous(NORMAL)")
	switch r {
	case roleWrite:
		q.Set("_txlock", "immediate")
		q.Add("_pragma", "wal_autocheckpoint(0)") // checkpointLoop does it
	case roleRead:
		q.Add("_pragma", "query_only(ON)")
	}
	return path + "?" + q.Encode()
}

func openSQLite(ctx context.Context, path string, o options) (_ *Store, err error) {
	s := &Store{d: sqliteDialect()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.inv, err = newInvCodec(); err != nil {
		return nil, err
	}

	// The writer first: it creates the file and switches it to WAL
	// before any reader opens it.
	if s.write, err = sql.Open("sqlite", sqliteDSN(path, o.busyTimeout, roleWrite)); err != nil {
		return nil, err
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxIdleTime(0)
	s.write.SetConnMaxLifetime(0)
	if err := s.write.PingContext(ctx); err != nil {
		return nil, err
	}
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, s.write, s.d, ms, o.logger); err != nil {
		return nil, err
	}

	if s.read, err = sql.Open("sqlite", sqliteDSN(path, o.busyTimeout, roleRead)); err != nil {
		return nil, err
	}
	s.read.SetMaxOpenConns(o.readConns)
	s.read.SetMaxIdleConns(o.readConns)
	s.read.SetConnMaxIdleTime(0)
	s.read.SetConnMaxLifetime(0)
	if err := s.read.PingContext(ctx); err != nil {
		return nil, err
	}

	if s.ckpt, err = sql.Open("sqlite", sqliteDSN(path, o.busyTimeout, roleCheckpoint)); err != nil {
		return nil, err
	}
	s.ckpt.SetMaxOpenConns(1)
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCkpt, s.ckptDone = cancel, make(chan struct{})
	go s.checkpointLoop(cctx, o.checkpointEvery, o.logger)

	if s.wstmts, err = prepareAll(ctx, s.write, s.d); err != nil {
		return nil, err
	}
	if s.rstmts, err = prepareAll(ctx, s.read, s.d); err != nil {
		return nil, err
	}
	return s, nil
}

// prepareAll prepares every query of preparedQueries on db. database/sql
// prepares a statement again on each other connection the first time a
// transaction there uses it.
func prepareAll(ctx context.Context, db *sql.DB, d *dialect) (map[string]*sql.Stmt, error) {
	qs := preparedQueries()
	m := make(map[string]*sql.Stmt, len(qs))
	for _, q := range qs {
		st, err := db.PrepareContext(ctx, d.rebind(q))
		if err != nil {
			err = fmt.Errorf("prepare %q: %w", q, err)
			for _, st := range m {
				err = errors.Join(err, st.Close())
			}
			return nil, err
		}
		m[q] = st
	}
	return m, nil
}

// checkpointLoop runs a passive WAL checkpoint every interval until ctx
// ends, then a last one so a cleanly closed database has an empty WAL.
func (s *Store) checkpointLoop(ctx context.Context, every time.Duration, log *slog.Logger) {
	defer close(s.ckptDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.ckpt.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); err != nil && ctx.Err() == nil {
				log.Error("WAL checkpoint failed; the WAL grows until one succeeds", "err", err)
			}
		}
	}
}

// Close stops the checkpointer, closes the prepared statements and the
// connection pools. Closing again returns the first Close's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	var errs []error
	if s.stopCkpt != nil {
		s.stopCkpt()
		<-s.ckptDone
		_, err := s.ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		errs = append(errs, err)
	}
	for _, m := range []map[string]*sql.Stmt{s.wstmts, s.rstmts} {
		for _, st := range m {
			errs = append(errs, st.Close())
		}
	}
	if s.sess != nil {
		errs = append(errs, s.sess.close())
	}
	for _, db := range []*sql.DB{s.read, s.write, s.ckpt} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// ChangesHeard reports whether this controller hears every change other
// controllers commit to the store: always on SQLite (there are none),
// while the change feed is connected on PostgreSQL.
func (s *Store) ChangesHeard() bool { return !s.d.shared || s.feedUp.Load() }

// Ping asks the database for a round trip (readiness checks). With
// replicas it also fails while the change feed is being followed but is
// not connected (this controller's streams would miss wake-ups), or when
// the session found the schema migrated past this binary.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if s.following.Load() && !s.feedUp.Load() {
		return errors.New("store: change feed not connected (wake-ups from other replicas would be missed)")
	}
	if s.sess != nil {
		if err := s.sess.fault(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}

// View runs fn in a read-only transaction on the read pool: it sees one
// consistent snapshot, and every write inside it fails.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	sqlTx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read-only transaction: %w", err)
	}
	return run(sqlTx, &tx{d: s.d, tx: sqlTx, prepared: s.rstmts, inv: s.inv, detach: s.d.detach}, fn)
}

func run(sqlTx *sql.Tx, t *tx, fn func(store.Tx) error) (err error) {
	returned := false
	defer func() {
		if !returned {
			// fn panicked or called runtime.Goexit: roll back and let
			// the panic continue unchanged. Its rollback error has no
			// one to go to.
			_ = sqlTx.Rollback()
		}
	}()
	fnErr := fn(t)
	returned = true
	if fnErr != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(fnErr, fmt.Errorf("rollback: %w", rbErr))
		}
		return fnErr
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
