package sqlstore

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	"github.com/anvil-metal/anvil/controller/store/storetest"
)

// TestPostgresConformance runs the store suite, exactly as SQLite runs it,
// against a real PostgreSQL server (Debian's, started by the test as an
// unprivileged user on a unix socket), a fresh database per case.
func TestPostgresConformance(t *testing.T) {
	c := pgtest.New(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := OpenPostgres(context.Background(), c.DSN(c.NewDatabase(t)), WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatalf("OpenPostgres: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

// A database migrated by a newer controller (a replica ahead of this one)
// is refused, not written to; a DSN with a password never shows it.
func TestPostgresRefusesANewerSchema(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	s, err := OpenPostgres(t.Context(), dsn, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(t.Context(), dsn, WithLogger(slog.New(slog.DiscardHandler))); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("open a database of schema 999: %v, want ErrSchemaTooNew", err)
	}
	_, err = OpenPostgres(t.Context(), "postgres://anvil:hunter2@127.0.0.1:1/x?connect_timeout=2&sslmode=disable")
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "xxxxx") {
		t.Errorf("unreachable server: %v, want an error with the password masked", err)
	}
	_, err = OpenPostgres(t.Context(), "host=127.0.0.1 port=1 user=anvil password=hunter2 dbname=x connect_timeout=2 sslmode=disable")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("unreachable server (key=value DSN): %v, want the password masked", err)
	}
}

// One controller per database: a second store on the same database is
// refused while the first is open, and opens once it is closed.
func TestPostgresOneController(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	first, err := OpenPostgres(t.Context(), dsn, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(t.Context(), dsn, quiet); !errors.Is(err, ErrInUse) {
		t.Fatalf("second store on one database: %v, want ErrInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := OpenPostgres(t.Context(), dsn, quiet)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}
