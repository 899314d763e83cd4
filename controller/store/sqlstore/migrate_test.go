package sqlstore

import (
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/anvil-metal/anvil/controller/store"
)

func TestEmbeddedMigrations(t *testing.T) {
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.version != i+1 {
			t.Errorf("migration %d: version %d", i, m.version)
		}
		for _, d := range []*dialect{sqliteDialect(), postgresDialect()} {
			if s := d.schema(m.sql); strings.Contains(s, "{{") {
				t.Errorf("%s, %s: token left after rewriting", m.name, d.name)
			}
		}
	}
}

func TestLoadMigrationsRejects(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"m/0001_a.sql": file("x"), "m/0003_c.sql": file("x")},
		"duplicate": {"m/0001_a.sql": file("x"), "m/1_b.sql": file("x")},
		"zero":      {"m/0000_a.sql": file("x")},
		"no number": {"m/init.sql": file("x")},
		"empty":     {"m/README": file("x")},
	} {
		if ms, err := loadMigrations(fsys, "m"); err == nil {
			t.Errorf("%s: loaded %v, want an error", name, ms)
		}
	}
	ms, err := loadMigrations(fstest.MapFS{"m/0002_b.sql": file("B"), "m/0001_a.sql": file("A"), "m/0010_j.sql": file("J"),
		"m/0003_c.sql": file("C"), "m/0004_d.sql": file("D"), "m/0005_e.sql": file("E"), "m/0006_f.sql": file("F"),
		"m/0007_g.sql": file("G"), "m/0008_h.sql": file("H"), "m/0009_i.sql": file("I")}, "m")
	if err != nil {
		t.Fatal(err)
	}
	var order string
	for _, m := range ms {
		order += m.sql
	}
	if order != "ABCDEFGHIJ" {
		t.Errorf("order %q, want numeric order ABCDEFGHIJ", order)
	}
}

// TestFailedMigrationRollsBack checks that each migration is one
// transaction: a failing one leaves neither its tables nor its version, and
// the migrations before it stay applied.
func TestFailedMigrationRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := sql.Open("sqlite", sqliteDSN(path, time.Second, roleWrite))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	d, log := sqliteDialect(), slog.New(slog.DiscardHandler)
	good := migration{version: 1, name: "0001_a.sql", sql: "CREATE TABLE a (x {{bytes}});"}
	bad := migration{version: 2, name: "0002_b.sql", sql: "CREATE TABLE b (x BIGINT); INSERT INTO nope VALUES (1);"}
	if err := migrate(t.Context(), db, d, []migration{good, bad}, log); err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("migrate with a failing migration: %v, want an error naming it", err)
	}
	var version, tables int
	if err := db.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('a', 'b')").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if version != 1 || tables != 1 {
		t.Errorf("after failed migration 2: version %d, %d of tables a and b; want version 1 and table a only", version, tables)
	}
	fixed := migration{version: 2, name: "0002_b.sql", sql: "CREATE TABLE b (x BIGINT);"}
	for range 2 { // the second run is a no-op
		if err := migrate(t.Context(), db, d, []migration{good, fixed}, log); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n != 2 {
		t.Errorf("schema_migrations rows = %d, %v; want 2", n, err)
	}
	// Knowing only migration 1, the database is too new.
	if err := migrate(t.Context(), db, d, []migration{good}, log); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("migrate with fewer migrations: %v, want ErrSchemaTooNew", err)
	}
}

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, sqlite, postgres string }{
		{"SELECT 1", "SELECT 1", "SELECT 1"},
		{"a = ? AND b = ?", "a = ? AND b = ?", "a = $1 AND b = $2"},
		{"a = '?' AND b = ? AND c = 'it''s?' AND d = ?", "a = '?' AND b = ? AND c = 'it''s?' AND d = ?", "a = '?' AND b = $1 AND c = 'it''s?' AND d = $2"},
		{qUpdateMachine, qUpdateMachine, ""},
	} {
		if got := sqliteDialect().rebind(tc.in); got != tc.sqlite {
			t.Errorf("sqlite rebind(%q) = %q, want %q", tc.in, got, tc.sqlite)
		}
		got := postgresDialect().rebind(tc.in)
		if tc.postgres == "" {
			if strings.Contains(got, "?") || !strings.Contains(got, "$16") || strings.Contains(got, "$17") {
				t.Errorf("postgres rebind(%q) = %q, want $1..$16", tc.in, got)
			}
			continue
		}
		if got != tc.postgres {
			t.Errorf("postgres rebind(%q) = %q, want %q", tc.in, got, tc.postgres)
		}
	}
}

// pgError mimics the SQLState method of pgx and lib/pq errors.
type pgError struct{ code string }

func (e *pgError) Error() string    { return "pg error " + e.code }
func (e *pgError) SQLState() string { return e.code }

func TestClassify(t *testing.T) {
	pg := postgresDialect()
	errOther := errors.New("other")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"unique", &pgError{"23505"}, store.ErrAlreadyExists},
		{"foreign key", &pgError{"23503"}, store.ErrNotFound},
		{"other", &pgError{"40001"}, nil},
		{"plain", errOther, nil},
	} {
		got := pg.classify(tc.err, store.ErrNotFound)
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: %v does not wrap the driver error", tc.name, got)
		}
		if tc.want != nil && !errors.Is(got, tc.want) {
			t.Errorf("%s: %v is not %v", tc.name, got, tc.want)
		}
		if tc.want == nil && (errors.Is(got, store.ErrAlreadyExists) || errors.Is(got, store.ErrNotFound)) {
			t.Errorf("%s: %v classified as a sentinel", tc.name, got)
		}
	}
	// A foreign key violation maps to nothing unless the caller says so.
	if got := pg.classify(&pgError{"23503"}, nil); errors.Is(got, store.ErrNotFound) {
		t.Errorf("foreign key without mapping: %v", got)
	}
}
