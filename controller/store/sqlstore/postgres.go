package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres opens the store in the PostgreSQL database dsn (a
// postgres:// URL or a key=value connection string, as pgx reads them) and
// migrates it to the newest schema. Writes go through one connection and
// are batched as with SQLite (one writer: the serialization point within
// this process); reads use a pool. The database's own transactions keep
// replicas on one database apart.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{readConns: max(4, runtime.NumCPU()), logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	shown := redactDSN(dsn)
	if o.readConns < 1 {
		return nil, fmt.Errorf("open postgres %s: read connections %d, want at least 1", shown, o.readConns)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", shown, err)
	}
	s, err := openPostgres(ctx, cfg, o)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", shown, err)
	}
	return s, nil
}

func openPostgres(ctx context.Context, cfg *pgx.ConnConfig, o options) (_ *Store, err error) {
	s := &Store{d: postgresDialect()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	s.write = stdlib.OpenDB(*cfg)
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxIdleTime(0)
	s.write.SetConnMaxLifetime(0)
	if err := s.write.PingContext(ctx); err != nil {
		return nil, err
	}
	if err := s.own(ctx, cfg); err != nil {
		return nil, err
	}
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, s.write, s.d, ms, o.logger); err != nil {
		return nil, err
	}
	s.read = stdlib.OpenDB(*cfg)
	s.read.SetMaxOpenConns(o.readConns)
	s.read.SetMaxIdleConns(o.readConns)
	s.read.SetConnMaxLifetime(time.Hour)
	if err := s.read.PingContext(ctx); err != nil {
		return nil, err
	}
	if s.wstmts, err = prepareAll(ctx, s.write, s.d); err != nil {
		return nil, err
	}
	if s.rstmts, err = prepareAll(ctx, s.read, s.d); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrInUse is returned when another controller holds the database: one
// controller per database until replicas share one (issue 17: change
// notification across processes, periodic work under a leader).
var ErrInUse = errors.New("another anvil controller uses this database")

// ownerLock is the session-level advisory lock key the store holds.
const ownerLock = 0x616e76696c // "anvil"

// own takes the database's controller lock on a connection of its own,
// held until Close (or the connection's end: PostgreSQL drops a session's
// advisory locks with it).
func (s *Store) own(ctx context.Context, cfg *pgx.ConnConfig) error {
	s.ownerDB = stdlib.OpenDB(*cfg)
	s.ownerDB.SetMaxOpenConns(1)
	conn, err := s.ownerDB.Conn(ctx)
	if err != nil {
		return err
	}
	s.owner = conn
	var ok bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", int64(ownerLock)).Scan(&ok); err != nil {
		return fmt.Errorf("take the controller lock: %w", err)
	}
	if !ok {
		return ErrInUse
	}
	return nil
}

// redactDSN is dsn without its password, for errors and logs.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	var out []string
	for _, kv := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(kv, "="); ok && k == "password" {
			kv = "password=xxxxx"
		}
		out = append(out, kv)
	}
	return strings.Join(out, " ")
}
