package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/storetest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func openTest(t testing.TB, path string, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	s, err := OpenSQLite(context.Background(), path, opts...)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "anvil.db"))
	})
}

// TestConformanceOneReader runs the suite with a single read connection,
// where a View that waited for another connection would deadlock.
func TestConformanceOneReader(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "anvil.db"), WithReadConns(1))
	})
}

// pragma reads one PRAGMA on a connection of db.
func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmas(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "anvil.db"), WithBusyTimeout(1234*time.Millisecond), WithReadConns(2))
	for _, tc := range []struct {
		db       *sql.DB
		name     string
		pragma   string
		want     string
		readOnly bool
	}{
		{s.write, "write", "journal_mode", "wal", false},
		{s.write, "write", "foreign_keys", "1", false},
		{s.write, "write", "synchronous", "1", false}, // NORMAL
		{s.write, "write", "busy_timeout", "1234", false},
		{s.write, "write", "query_only", "0", false},
		{s.read, "read", "journal_mode", "wal", true},
		{s.read, "read", "foreign_keys", "1", true},
		{s.read, "read", "synchronous", "1", true},
		{s.read, "read", "busy_timeout", "1234", true},
		{s.read, "read", "query_only", "1", true},
	} {
		if got := pragma(t, tc.db, tc.pragma); got != tc.want {
			t.Errorf("%s connection: PRAGMA %s = %q, want %q", tc.name, tc.pragma, got, tc.want)
		}
	}
	// Every pooled read connection, not only the first, is configured.
	conns := make([]*sql.Conn, 2)
	for i := range conns {
		c, err := s.read.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	for i, c := range conns {
		var v string
		if err := c.QueryRowContext(t.Context(), "PRAGMA query_only").Scan(&v); err != nil || v != "1" {
			t.Errorf("read connection %d: query_only = %q, %v", i, v, err)
		}
	}
}

func TestWALMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	openTest(t, path)
	// journal_mode=WAL is a property of the file: a plain connection sees it.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := pragma(t, db, "journal_mode"); got != "wal" {
		t.Errorf("journal_mode = %q, want wal", got)
	}
}

func TestOpenRefusesBadPaths(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		if s, err := OpenSQLite(t.Context(), path); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q): no error", path)
		}
	}
}

func schemaVersions(t *testing.T, path string) map[int64]int64 {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT version, applied_at FROM schema_migrations")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int64{}
	for rows.Next() {
		var v, at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out[v] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	ctx := t.Context()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	m := &store.Machine{ID: "m1", UUID: "u1", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		Status: lifecycle.Status{State: anvilv1.MachineState_MACHINE_STATE_READY}}
	var seq int64
	err = s.Tx(ctx, func(tx store.Tx) error {
		if err := tx.CreateMachine(ctx, m); err != nil {
			return err
		}
		e := &anvilv1.Event{MachineId: "m1", Time: timestamppb.New(m.CreatedAt)}
		err := tx.AppendEvent(ctx, e)
		seq = e.Seq
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := schemaVersions(t, path)
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d", len(before), len(ms))
	}

	for i := range 2 {
		s := openTest(t, path)
		if after := schemaVersions(t, path); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("reopen %d: schema_migrations %v, want unchanged %v", i, after, before)
		}
		err := s.View(ctx, func(tx store.Tx) error {
			got, err := tx.GetMachine(ctx, "m1")
			if err != nil {
				return err
			}
			if !got.CreatedAt.Equal(m.CreatedAt) || got.Status.State != m.Status.State {
				t.Errorf("reopen %d: machine %+v", i, got)
			}
			evs, err := tx.ListEvents(ctx, "m1", 0, 0)
			if len(evs) != 1 || evs[0].Seq != seq {
				t.Errorf("reopen %d: events %v, want seq %d", i, evs, seq)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	s := openTest(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err = OpenSQLite(t.Context(), path)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("OpenSQLite of a newer database: %v, want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), "999") {
		t.Errorf("error %q does not name the database's version", err)
	}
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if got := schemaVersions(t, path); len(got) != len(ms)+1 {
		t.Errorf("schema_migrations after refusal: %v", got)
	}
}

// TestUpgradeAddsBMC opens a database written by a binary that knew only
// migration 0001: its machines come through with no BMC, and a BMC can be
// set.
func TestUpgradeAddsBMC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	ctx := t.Context()
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, sqliteDialect(), ms[:1], slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO machines (id, uuid, macs, size_id, labels, allocated, status, state)
		VALUES ('m1', 'u1', '[]', '', '{}', false, '{"state":3}', 3)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openTest(t, path)
	defer s.Close()
	m := &store.Machine{}
	err = s.Tx(ctx, func(tx store.Tx) error {
		got, err := tx.GetMachine(ctx, "m1")
		if err != nil {
			return err
		}
		if got.BMC != "" || got.Status.State != anvilv1.MachineState_MACHINE_STATE_READY {
			t.Errorf("upgraded machine: BMC %q, state %v", got.BMC, got.Status.State)
		}
		got.BMC = "ipmi://admin:pw@192.0.2.10"
		m = got
		return tx.UpdateMachine(ctx, got)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		got, err := tx.GetMachine(ctx, "m1")
		if err == nil && got.BMC != m.BMC {
			t.Errorf("BMC after update %q, want %q", got.BMC, m.BMC)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTxIsSerialized holds the write transaction open and checks that a
// second writer waits for it instead of failing, and that readers go on.
func TestTxIsSerialized(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "anvil.db"), WithBusyTimeout(10*time.Millisecond))
	ctx := t.Context()
	inFirst, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- s.Tx(ctx, func(tx store.Tx) error {
			if err := tx.CreateImage(ctx, &anvilv1.Image{Id: "first"}); err != nil {
				return err
			}
			close(inFirst)
			<-release
			return nil
		})
	}()
	<-inFirst
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- s.Tx(ctx, func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Id: "second"}) })
	}()
	// The reader does not wait for the writer and does not see its
	// uncommitted image.
	err := s.View(ctx, func(tx store.Tx) error {
		imgs, err := tx.ListImages(ctx)
		if len(imgs) != 0 {
			t.Errorf("View saw uncommitted images %v", imgs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Far longer than the busy timeout: SQLite's lock would have failed.
	select {
	case err := <-secondDone:
		t.Fatalf("second writer finished while the first held the transaction: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for i, ch := range []chan error{firstDone, secondDone} {
		if err := <-ch; err != nil {
			t.Errorf("writer %d: %v", i+1, err)
		}
	}
}

// --- benchmarks ---

func benchMachine(i int) *store.Machine {
	id := fmt.Sprintf("m%08d", i)
	disks := make([]*anvilv1.Disk, 4)
	for d := range disks {
		disks[d] = &anvilv1.Disk{Name: fmt.Sprintf("nvme%dn1", d), Path: fmt.Sprintf("/dev/nvme%dn1", d), Model: "PM9A3", Serial: fmt.Sprintf("S%d-%d", i, d), SizeBytes: 1 << 40}
	}
	return &store.Machine{
		ID: id, UUID: "uuid-" + id, MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02"},
		Inventory: &anvilv1.Inventory{
			Cpu:    &anvilv1.CPU{Vendor: "GenuineIntel", Model: "Xeon Gold 6338", Sockets: 2, Cores: 64, Threads: 128},
			Memory: &anvilv1.Memory{TotalBytes: 512 << 30},
			Disks:  disks,
			Nics: []*anvilv1.NIC{
				{Name: "eno1", Mac: "52:54:00:00:00:01", Driver: "ice", SpeedMbps: 25000, LinkUp: true},
				{Name: "eno2", Mac: "52:54:00:00:00:02", Driver: "ice", SpeedMbps: 25000},
			},
		},
		SizeID:         "c1-large",
		Labels:         map[string]string{"rack": "r1"},
		Status:         lifecycle.Status{State: anvilv1.MachineState_MACHINE_STATE_REGISTERING, LastEventTime: time.Now()},
		CredentialHash: []byte(fmt.Sprintf("%032d", i)),
		CreatedAt:      time.Now(),
		LastSeen:       time.Now(),
	}
}

func BenchmarkCreateMachine(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "anvil.db"))
	ctx := context.Background()
	i := 0
	for b.Loop() {
		m := benchMachine(i)
		i++
		if err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateMachine(ctx, m) }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "anvil.db"))
	ctx := context.Background()
	if err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateMachine(ctx, benchMachine(0)) }); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		e := &anvilv1.Event{MachineId: "m00000000", Time: timestamppb.Now(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
			Message: "writing image", InstructionId: "in-1", Progress: &anvilv1.Progress{BytesDone: 1 << 20, BytesTotal: 1 << 30}}
		if err := s.Tx(ctx, func(tx store.Tx) error { return tx.AppendEvent(ctx, e) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegister is one agent registration as the server does it: look
// the machine up by UUID, update it, append an event and trim the history
// to 500, in one transaction, against 1,000 machines with 500 events each.
func BenchmarkRegister(b *testing.B) {
	const machines, history = 1000, 500
	s := openTest(b, filepath.Join(b.TempDir(), "anvil.db"))
	ctx := context.Background()
	err := s.Tx(ctx, func(tx store.Tx) error {
		for i := range machines {
			if err := tx.CreateMachine(ctx, benchMachine(i)); err != nil {
				return err
			}
			for range history {
				if err := tx.AppendEvent(ctx, &anvilv1.Event{MachineId: benchMachine(i).ID, Time: timestamppb.Now(), Type: anvilv1.EventType_EVENT_TYPE_WAITING}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		uuid := benchMachine(i % machines).UUID
		i++
		err := s.Tx(ctx, func(tx store.Tx) error {
			m, err := tx.GetMachineByUUID(ctx, uuid)
			if err != nil {
				return err
			}
			m.LastSeen = time.Now()
			m.Status.State = anvilv1.MachineState_MACHINE_STATE_REGISTERING
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, &anvilv1.Event{MachineId: m.ID, Time: timestamppb.Now(), Type: anvilv1.EventType_EVENT_TYPE_REGISTERING}); err != nil {
				return err
			}
			return tx.TrimEvents(ctx, m.ID, history)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// Commits never checkpoint (the writer's autocheckpoint is off); the
// background checkpointer moves the WAL into the database file.
func TestBackgroundCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	s := openTest(t, path, WithCheckpointInterval(20*time.Millisecond))
	ctx := context.Background()
	var auto int
	if err := s.write.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil {
		t.Fatal(err)
	}
	if auto != 0 {
		t.Fatalf("writer wal_autocheckpoint = %d, want 0 (commits must not checkpoint)", auto)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before := st.Size()
	if err := s.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateImage(ctx, &anvilv1.Image{Id: "big", Description: strings.Repeat("x", 256<<10)})
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > before+200<<10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (was %d): the WAL was never checkpointed", st.Size(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Writers that share a commit stay isolated: the failed and panicking ones
// leave nothing, the others all land.
func TestGroupCommitIsolatesWriters(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "anvil.db"))
	ctx := context.Background()
	const n = 60
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil && i%3 != 2 {
					t.Errorf("writer %d panicked: %v", i, r)
				}
			}()
			errs[i] = s.Tx(ctx, func(tx store.Tx) error {
				if err := tx.CreateImage(ctx, &anvilv1.Image{Id: fmt.Sprintf("img-%02d", i)}); err != nil {
					return err
				}
				switch i % 3 {
				case 1:
					return errors.New("refused")
				case 2:
					panic("boom")
				}
				return nil
			})
		})
	}
	wg.Wait()
	var imgs []*anvilv1.Image
	if err := s.View(ctx, func(tx store.Tx) error {
		var err error
		imgs, err = tx.ListImages(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, im := range imgs {
		got[im.GetId()] = true
	}
	for i := range n {
		id := fmt.Sprintf("img-%02d", i)
		switch i % 3 {
		case 0:
			if errs[i] != nil || !got[id] {
				t.Errorf("writer %d: err %v, stored %v; want committed", i, errs[i], got[id])
			}
		case 1:
			if errs[i] == nil || errs[i].Error() != "refused" || got[id] {
				t.Errorf("writer %d: err %v, stored %v; want its own error and nothing stored", i, errs[i], got[id])
			}
		case 2:
			if got[id] {
				t.Errorf("writer %d panicked but its image was stored", i)
			}
		}
	}
}

// A caller that gives up mid-transaction is refused at its next statement
// with its context's error: in a read (not database/sql's "transaction
// done" once the read is rolled back) and in a write batch, where its
// writes are undone and the others' commit.
func TestCancelledCallerIsRefused(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "anvil.db"))
	ctx := t.Context()
	if err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateMachine(ctx, benchMachine(1)) }); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	err := s.View(rctx, func(tx store.Tx) error {
		if _, err := tx.GetMachineLight(rctx, "m00000001"); err != nil {
			return err
		}
		cancel()
		_, err := tx.GetMachineLight(rctx, "m00000001")
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("read after the caller cancelled: %v, want context.Canceled", err)
	}

	inFirst, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- s.Tx(ctx, func(tx store.Tx) error {
			close(inFirst)
			<-release // hold the batch open until the others are queued
			return tx.CreateImage(ctx, &anvilv1.Image{Id: "first"})
		})
	}()
	<-inFirst
	wctx, wcancel := context.WithCancel(ctx)
	gaveUp, other := make(chan error, 1), make(chan error, 1)
	go func() {
		gaveUp <- s.Tx(wctx, func(tx store.Tx) error {
			if err := tx.CreateImage(wctx, &anvilv1.Image{Id: "gave-up"}); err != nil {
				return err
			}
			wcancel()
			return tx.CreateImage(wctx, &anvilv1.Image{Id: "gave-up-2"})
		})
	}()
	go func() {
		other <- s.Tx(ctx, func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Id: "other"}) })
	}()
	for s.w.waiting.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the writer that gave up: %v, want context.Canceled", err)
	}
	var ids []string
	if err := s.View(ctx, func(tx store.Tx) error {
		imgs, err := tx.ListImages(ctx)
		for _, img := range imgs {
			ids = append(ids, img.GetId())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "first,other" {
		t.Errorf("images after the batch: %v, want first and other (the cancelled writer's undone)", ids)
	}
}
