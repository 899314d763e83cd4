package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	"github.com/anvil-metal/anvil/controller/store/storetest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// TestPostgresConformance runs the store suite, exactly as SQLite runs it,
// against a real PostgreSQL server (Debian's, started by the test as an
// unprivileged user on a unix socket), a fresh database per case.
func TestPostgresConformance(t *testing.T) {
	c := pgtest.New(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openPostgresTest(t, c.DSN(c.NewDatabase(t))) })
}

// A database migrated by a newer controller (a replica ahead of this one)
// is refused, not written to; a DSN with a password never shows it.
func TestPostgresRefusesANewerSchema(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	s, err := OpenPostgres(t.Context(), dsn, WithLogger(slog.New(slog.DiscardHandler)), testFeedKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(t.Context(), dsn, WithLogger(slog.New(slog.DiscardHandler)), testFeedKey); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("open a database of schema 999: %v, want ErrSchemaTooNew", err)
	}
	_, err = OpenPostgres(t.Context(), "postgres://anvil:hunter2@127.0.0.1:1/x?connect_timeout=2&sslmode=disable", testFeedKey)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "xxxxx") {
		t.Errorf("unreachable server: %v, want an error with the password masked", err)
	}
	_, err = OpenPostgres(t.Context(), "host=127.0.0.1 port=1 user=anvil password=hunter2 dbname=x connect_timeout=2 sslmode=disable", testFeedKey)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("unreachable server (key=value DSN): %v, want the password masked", err)
	}
}

// follow runs b.Follow until the test ends and returns what it delivers,
// once the feed is connected (its first delivery is the resync of a new
// connection).
func follow(t *testing.T, b *Store) <-chan store.Change {
	t.Helper()
	ch := make(chan store.Change, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Follow(ctx, func(c store.Change) { ch <- c }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case c := <-ch:
		if !c.Resync {
			t.Fatalf("first delivery %+v, want the resync of a new connection", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("change feed did not connect")
	}
	return ch
}

// Two controllers on one database: what one commits is announced to the
// other (wake-ups, the newest seq per machine, live progress whole), in
// commit order; a rolled-back transaction announces nothing; a controller
// does not hear itself.
func TestPostgresChangeFeed(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	a, b := openPostgresTest(t, dsn), openPostgresTest(t, dsn)
	fromA, fromB := follow(t, b), follow(t, a)
	ctx := t.Context()
	if err := a.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateMachine(ctx, &store.Machine{ID: "m-1", UUID: "u-1", CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	if err := a.Tx(ctx, func(tx store.Tx) error {
		var evs []*anvilv1.Event
		for range 2 {
			e := &anvilv1.Event{MachineId: "m-1", Type: anvilv1.EventType_EVENT_TYPE_REGISTERING}
			if err := tx.AppendEvent(ctx, e); err != nil {
				return err
			}
			seqs = append(seqs, e.Seq)
			evs = append(evs, e)
		}
		live := &anvilv1.Event{MachineId: "m-1", Type: anvilv1.EventType_EVENT_TYPE_INSTALLING, Progress: &anvilv1.Progress{BytesDone: 7}}
		return tx.Announce(ctx, store.Change{Wake: []string{"m-1"}, Events: append(evs, live)})
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := a.Tx(ctx, func(tx store.Tx) error {
		if err := tx.Announce(ctx, store.Change{Wake: []string{"rolled-back"}}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := a.Tx(ctx, func(tx store.Tx) error { return tx.Announce(ctx, store.Change{Wake: []string{"m-2"}}) }); err != nil {
		t.Fatal(err)
	}
	got := next(t, fromA)
	if len(got.Wake) != 1 || got.Wake[0] != "m-1" || len(got.Events) != 2 {
		t.Fatalf("first change %+v, want a wake-up of m-1 and two events", got)
	}
	if e := got.Events[0]; e.GetMachineId() != "m-1" || e.GetSeq() != seqs[1] {
		t.Errorf("stored events travel as the newest seq: %v, want m-1 seq %d", e, seqs[1])
	}
	if e := got.Events[1]; e.GetSeq() != 0 || e.GetProgress().GetBytesDone() != 7 || e.GetType() != anvilv1.EventType_EVENT_TYPE_INSTALLING {
		t.Errorf("live progress travels whole: %v", e)
	}
	if got := next(t, fromA); len(got.Wake) != 1 || got.Wake[0] != "m-2" {
		t.Fatalf("second change %+v, want m-2 (the rolled-back one announces nothing)", got)
	}
	select {
	case c := <-fromB:
		t.Fatalf("a heard its own announcement: %+v", c)
	case <-time.After(300 * time.Millisecond):
	}
}

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change announced")
		return store.Change{}
	}
}

// Events written by two controllers at once are visible in seq order: a
// reader that follows "after the last seq I saw", as WatchEvents does,
// misses none. Without the writer lock, seqs drawn from one sequence commit
// out of order and such a reader skips the late ones.
func TestPostgresReplicasCommitEventsInSeqOrder(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	a, b := openPostgresTest(t, dsn), openPostgresTest(t, dsn)
	ctx := t.Context()
	if err := a.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateMachine(ctx, &store.Machine{ID: "m-1", UUID: "u-1", CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		s := []*Store{a, b}[i%2]
		wg.Go(func() {
			for range each {
				if err := s.Tx(ctx, func(tx store.Tx) error {
					return tx.AppendEvent(ctx, &anvilv1.Event{MachineId: "m-1", Type: anvilv1.EventType_EVENT_TYPE_WAITING})
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen, last := 0, int64(0)
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		if err := b.View(ctx, func(tx store.Tx) error {
			evs, err := tx.ListEvents(ctx, "m-1", last, 0)
			for _, e := range evs {
				seen++
				last = e.GetSeq()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if seen != writers*each {
		t.Fatalf("a reader following seqs saw %d of %d events: some committed behind a higher seq", seen, writers*each)
	}
}

// Leadership: exactly one of two controllers leads; when it goes (its
// session ends as a crash would end it), the other takes the lead.
func TestPostgresLeaderMoves(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	a, b := openPostgresTest(t, dsn), openPostgresTest(t, dsn)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { a.Lead(ctx, nil) })
	waitFor(t, "a leads", a.IsLeader)
	wg.Go(func() { b.Lead(ctx, nil) })
	time.Sleep(2 * leaderEvery)
	if !a.IsLeader() || b.IsLeader() {
		t.Fatalf("a leader %v, b leader %v: want a only", a.IsLeader(), b.IsLeader())
	}
	// End a's session the way a dead process's ends: from the server side.
	if _, err := b.write.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
		int64(leaderLock)&0xffffffff); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b leads", b.IsLeader)
	waitFor(t, "a no longer leads", func() bool { return !a.IsLeader() })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(4*leaderEvery + 5*time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, 4*leaderEvery+5*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A binary that would migrate the database refuses to while controllers of
// the older schema run on it; once they are gone it migrates, and then an
// older controller is refused (ErrSchemaTooNew).
func TestPostgresMigrationWaitsForOlderReplicas(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	old := openPostgresTest(t, dsn)
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	newer := append(ms[:len(ms):len(ms)], migration{version: len(ms) + 1, name: "9999_next.sql", sql: "CREATE TABLE next_feature (id BIGINT)"})
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	if _, err := openPostgres(t.Context(), cfg, options{readConns: 2, logger: quiet, migrations: newer, feedKey: "feed-key-for-tests"}); !errors.Is(err, ErrReplicasRunning) {
		t.Fatalf("migrate under a running older replica: %v, want ErrReplicasRunning", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	up, err := openPostgres(t.Context(), cfg, options{readConns: 2, logger: quiet, migrations: newer, feedKey: "feed-key-for-tests"})
	if err != nil {
		t.Fatalf("migrate once the older replica is gone: %v", err)
	}
	defer up.Close()
	if _, err := OpenPostgres(t.Context(), dsn, WithLogger(quiet), testFeedKey); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("an older replica after the migration: %v, want ErrSchemaTooNew", err)
	}
}

// A replica that stops in the middle of a write batch (frozen, or its host
// lost power: no FIN reaches the server) holds the writer lock every
// replica waits for; the server ends its session after the idle-in-
// transaction limit, so the others' writes go on, and the stalled batch
// fails rather than committing later.
func TestPostgresStalledReplicaReleasesTheWriterLock(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	const limit = time.Second
	sessionLimits(cfg, limit)
	stalled, err := openPostgres(t.Context(), cfg, options{readConns: 2, logger: slog.New(slog.DiscardHandler), feedKey: "feed-key-for-tests"})
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	other := openPostgresTest(t, dsn)
	ctx := t.Context()
	holding, release := make(chan struct{}), make(chan struct{})
	stalledErr := make(chan error, 1)
	go func() {
		stalledErr <- stalled.Tx(ctx, func(tx store.Tx) error {
			if err := tx.CreateMachine(ctx, &store.Machine{ID: "late", UUID: "u-late", CreatedAt: time.Now()}); err != nil {
				return err
			}
			close(holding)
			<-release // frozen mid-batch, the writer lock held
			return nil
		})
	}()
	<-holding
	// Unfreeze it later in any case, so the test ends without the fix too.
	time.AfterFunc(limit+3*time.Second, func() { close(release) })
	t0 := time.Now()
	if err := other.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateMachine(ctx, &store.Machine{ID: "m-1", UUID: "u-1", CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(t0)
	if waited > limit+2*time.Second {
		t.Errorf("the other replica's write waited %v for the stalled batch (limit %v)", waited, limit)
	}
	if err := <-stalledErr; err == nil {
		t.Error("the stalled batch committed after its session was ended")
	}
	if err := other.View(ctx, func(tx store.Tx) error {
		_, err := tx.GetMachine(ctx, "late")
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the stalled batch's machine: %v, want not found", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// A replica that loses its session while a newer binary migrates the
// database sees, when it reconnects, a schema newer than its own: it says
// it must stop serving (Faulted), and readiness fails.
func TestPostgresReplicaStopsOnANewerSchema(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	old, admin := openPostgresTest(t, dsn), openPostgresTest(t, dsn)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { old.Lead(ctx, nil) })
	// The newer binary's migration, then the old replica's session cut.
	if _, err := admin.write.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.write.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND pid <> pg_backend_pid()",
		int64(schemaLockClass)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Faulted():
	case <-time.After(4*leaderEvery + 5*time.Second):
		t.Fatal("the old replica did not notice the newer schema")
	}
	if err := old.Fault(); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("fault %v, want ErrSchemaTooNew", err)
	}
	if err := old.Ping(ctx); err == nil {
		t.Error("the old replica still says it is ready")
	}
}

// testFeedKey is the feed key of the tests' replicas.
var testFeedKey = WithFeedKey("feed-key-for-tests")

// A notification on the channel without the replicas' MAC (any role that
// may connect can NOTIFY) is dropped: no wake-up, no resync, no live event.
func TestPostgresFeedDropsForgedNotifications(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	a, b := openPostgresTest(t, dsn), openPostgresTest(t, dsn)
	fromA := follow(t, b)
	ctx := t.Context()
	forged := []string{
		`{"o":"x","r":true}`,
		`{"o":"x","w":["m-1"]}`,
		strings.Repeat("0", 32) + `.{"o":"x","w":["m-1"]}`,
		string(sign([]byte("another key, not the feed key"), []byte(`{"o":"x","w":["m-1"]}`))),
	}
	for _, p := range forged {
		if _, err := a.write.ExecContext(ctx, "SELECT pg_notify($1, $2)", changesChannel, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Tx(ctx, func(tx store.Tx) error { return tx.Announce(ctx, store.Change{Wake: []string{"m-2"}}) }); err != nil {
		t.Fatal(err)
	}
	if got := next(t, fromA); len(got.Wake) != 1 || got.Wake[0] != "m-2" || got.Resync {
		t.Fatalf("first change delivered %+v, want only the genuine wake-up of m-2", got)
	}
	if n := b.forged.Load(); n != int64(len(forged)) {
		t.Errorf("%d notifications dropped as forged, want %d", n, len(forged))
	}
}
