package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Replicas on one PostgreSQL database. Every lock here is an advisory lock
// of a session (a connection): PostgreSQL drops it when the session ends,
// so a replica that dies (kill -9, a lost host) gives its locks up as soon
// as the server notices the connection is gone.
//
//   - writerLock (transaction-level, dialect.lockWrites): one write batch
//     at a time across replicas.
//   - migrateLock: replicas starting at once check and migrate the schema
//     one at a time.
//   - (schemaLockClass, version), shared: held by every running replica
//     for its schema version. A binary that must migrate the database
//     takes it exclusively first, so it refuses to migrate under running
//     replicas of the older version (ErrReplicasRunning).
//   - leaderLock: the replica holding it runs the periodic work (BMC
//     checks, recovery power cycles); the others try again every
//     leaderEvery, and the leader checks its session as often.
const (
	writerLock      = 0x616e76696c00 // "anvil\0"
	migrateLock     = 0x616e76696c01
	leaderLock      = 0x616e76696c02
	schemaLockClass = 0x616e76 // "anv" (the two-key form: class, version)
)

// leaderEvery is how often a follower tries to take the lead and the
// leader checks that its session is alive.
const leaderEvery = 2 * time.Second

// ErrReplicasRunning is returned by OpenPostgres when the database must be
// migrated while controllers of the schema version it has are running:
// they would run on a schema they do not know. Stop them (or upgrade them
// one at a time after the first upgraded replica migrated it).
var ErrReplicasRunning = errors.New("controllers of the older schema version are running on this database")

// session is a replica's own connection, holding its schema lock and,
// while it leads, the leader lock.
type session struct {
	cfg     *pgx.ConnConfig
	version int // this binary's schema version
	log     *slog.Logger

	mu   sync.Mutex // guards conn
	conn *pgx.Conn
	// leader is whether this replica holds the leader lock.
	leader atomic.Bool
	// faultErr is set when the schema moved past this binary (a newer
	// replica migrated the database while this one was reconnecting).
	faultErr atomic.Pointer[error]
	faulted  chan struct{}
}

// join opens the session, then checks and (when nothing older runs)
// migrates the schema under the migrate lock, and holds the shared lock of
// the schema version it runs.
func (s *Store) join(ctx context.Context, ms []migration, log *slog.Logger) error {
	latest := ms[len(ms)-1].version
	sess := &session{cfg: s.pgcfg, version: latest, log: log, faulted: make(chan struct{})}
	conn, err := pgx.ConnectConfig(ctx, s.pgcfg.Copy())
	if err != nil {
		return err
	}
	sess.conn = conn
	s.sess = sess
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLock)); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	err = func() error {
		current, err := schemaVersion(ctx, conn)
		if err != nil {
			return err
		}
		if current > 0 && current < latest {
			var free bool
			if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", int32(schemaLockClass), int32(current)).Scan(&free); err != nil {
				return fmt.Errorf("check for running replicas: %w", err)
			}
			if !free {
				return fmt.Errorf("the database is at schema version %d and this binary would migrate it to %d: %w; stop them first",
					current, latest, ErrReplicasRunning)
			}
			// Held through the migration: an older replica reconnecting
			// meanwhile (after a restart of the server) cannot take its
			// shared lock back and serve on a half-migrated schema.
			defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1, $2)", int32(schemaLockClass), int32(current)) //nolint:errcheck // ending the session drops it too
		}
		if err := migrate(ctx, s.write, s.d, ms, log); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "SELECT pg_advisory_lock_shared($1, $2)", int32(schemaLockClass), int32(latest))
		return err
	}()
	if _, uerr := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(migrateLock)); uerr != nil && err == nil {
		err = fmt.Errorf("release the migration lock: %w", uerr)
	}
	return err
}

// schemaVersion is the database's schema version (0 for an empty one).
func schemaVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := conn.QueryRow(ctx, qMaxVersion).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// IsLeader reports whether this controller runs the fleet's periodic work:
// always with SQLite (one controller), while it holds the leader lock with
// PostgreSQL (Lead).
func (s *Store) IsLeader() bool {
	return s.sess == nil || s.sess.leader.Load()
}

// Lead keeps this replica in the leader election until ctx ends: every
// leaderEvery a follower tries to take the leader lock and the leader
// checks its session. A lost session (the database restarted, the network
// failed) ends the lead at once; the session is opened again and takes
// the schema lock back. onChange is called with each change of status. On
// SQLite it returns at once (IsLeader is always true).
func (s *Store) Lead(ctx context.Context, onChange func(leader bool)) {
	if s.sess == nil {
		return
	}
	t := time.NewTicker(leaderEvery)
	defer t.Stop()
	for {
		was := s.sess.leader.Load()
		if err := s.sess.step(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("leader election: database session lost; retrying", "err", err, "retry", leaderEvery)
		}
		if now := s.sess.leader.Load(); now != was && onChange != nil {
			onChange(now)
		}
		select {
		case <-ctx.Done():
			s.sess.resign()
			if was := s.sess.leader.Swap(false); was && onChange != nil {
				onChange(false)
			}
			return
		case <-t.C:
		}
	}
}

// step is one round of the election.
func (ss *session) step(ctx context.Context) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, leaderEvery)
	defer cancel()
	if ss.conn == nil || ss.conn.IsClosed() {
		ss.leader.Store(false)
		if err := ss.reopen(cctx); err != nil {
			return err
		}
	}
	var err error
	if ss.leader.Load() {
		_, err = ss.conn.Exec(cctx, "SELECT 1")
	} else {
		var got bool
		if err = ss.conn.QueryRow(cctx, "SELECT pg_try_advisory_lock($1)", int64(leaderLock)).Scan(&got); err == nil && got {
			ss.leader.Store(true)
			ss.log.Info("this controller leads the periodic work")
		}
	}
	if err != nil {
		ss.leader.Store(false)
		ss.conn.Close(context.Background()) //nolint:errcheck // the session is gone either way
		return err
	}
	return nil
}

// reopen connects again and takes the schema lock back, unless the schema
// moved past this binary meanwhile (fault).
func (ss *session) reopen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, ss.cfg.Copy())
	if err != nil {
		return err
	}
	// The shared lock first, then the version: a migration holds the
	// exclusive lock until it committed, so what is read next is final.
	var got bool
	err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock_shared($1, $2)", int32(schemaLockClass), int32(ss.version)).Scan(&got)
	if err == nil && !got {
		err = errors.New("another controller is migrating the database")
	}
	if err == nil {
		var v int
		if v, err = schemaVersion(ctx, conn); err == nil && v > ss.version {
			err = fmt.Errorf("the database was migrated to schema version %d while this controller (version %d) was reconnecting: %w", v, ss.version, ErrSchemaTooNew)
			ss.setFault(err)
		}
	}
	if err != nil {
		conn.Close(context.Background()) //nolint:errcheck // reporting err
		return err
	}
	ss.conn = conn
	return nil
}

// setFault records the session's lasting problem and closes faulted.
func (ss *session) setFault(err error) {
	if ss.faultErr.CompareAndSwap(nil, &err) {
		close(ss.faulted)
	}
}

// Faulted is closed when this controller must stop serving: the database
// was migrated past its schema version while it was reconnecting. It is
// never closed on SQLite.
func (s *Store) Faulted() <-chan struct{} {
	if s.sess == nil {
		return nil
	}
	return s.sess.faulted
}

// Fault is why Faulted was closed (nil before).
func (s *Store) Fault() error {
	if s.sess == nil {
		return nil
	}
	return s.sess.fault()
}

// fault is the session's lasting problem, if any.
func (ss *session) fault() error {
	if p := ss.faultErr.Load(); p != nil {
		return *p
	}
	return nil
}

// resign gives the leader lock up (ending the session does too).
func (ss *session) resign() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != nil && !ss.conn.IsClosed() && ss.leader.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ss.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(leaderLock)) //nolint:errcheck // closing the session drops it anyway
	}
}

func (ss *session) close() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return ss.conn.Close(ctx)
}
