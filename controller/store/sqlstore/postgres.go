package sqlstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres opens the store in the PostgreSQL database dsn (a
// postgres:// URL or a key=value connection string, as pgx reads them) and
// migrates it to the newest schema. Writes go through one connection and
// are batched as with SQLite; reads use a pool.
//
// Several controllers (replicas) may open one database (replica.go): each
// write batch holds the database's writer lock, so their transactions
// apply one after the other as a single controller's would; changes are
// announced to the others (feed.go); one of them leads the periodic work.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{readConns: max(4, runtime.NumCPU()), logger: slog.Default(), idleInTx: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	shown := redactDSN(dsn)
	if o.readConns < 1 {
		return nil, fmt.Errorf("open postgres %s: read connections %d, want at least 1", shown, o.readConns)
	}
	if len(o.feedKey) < 16 {
		return nil, fmt.Errorf("open postgres %s: a feed key of at least 16 bytes is required (WithFeedKey): replicas authenticate their change announcements with it", shown)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", shown, err)
	}
	sessionLimits(cfg, o.idleInTx)
	s, err := openPostgres(ctx, cfg, o)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", shown, err)
	}
	return s, nil
}

func openPostgres(ctx context.Context, cfg *pgx.ConnConfig, o options) (_ *Store, err error) {
	s := &Store{d: postgresDialect(), pgcfg: cfg, log: o.logger, origin: rand.Text(), feedKey: []byte(o.feedKey)}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.inv, err = newInvCodec(); err != nil {
		return nil, err
	}
	s.write = stdlib.OpenDB(*cfg)
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxIdleTime(0)
	s.write.SetConnMaxLifetime(0)
	if err := s.write.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	ms := o.migrations
	if ms == nil {
		if ms, err = loadMigrations(migrationFiles, "migrations"); err != nil {
			return nil, err
		}
	}
	if err := s.join(ctx, ms, o.logger); err != nil {
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

// sessionLimits makes the server end this controller's sessions when the
// controller cannot: a transaction left open longer than idleInTx (the
// replica froze or its host lost power mid-batch) is aborted, which
// releases the writer lock every replica's writes wait for; and a peer
// that stopped answering (power, network) is found by TCP keepalives
// within about 11 s, which releases its leader and schema locks. Without
// them PostgreSQL's defaults keep such a session, and its locks, for
// about two hours. A batch never idles between its statements for more
// than milliseconds.
func sessionLimits(cfg *pgx.ConnConfig, idleInTx time.Duration) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(idleInTx.Milliseconds(), 10)
	cfg.RuntimeParams["tcp_keepalives_idle"] = "5"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "2"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
}

// ErrUnreachable is returned by OpenPostgres when the database does not
// accept a connection (down, starting, refusing): worth trying again,
// unlike a bad URL or a schema it must not touch.
var ErrUnreachable = errors.New("database unreachable")

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
