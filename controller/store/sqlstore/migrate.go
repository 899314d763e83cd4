package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationFiles are the schema migrations, applied in version order. A file
// is named NNNN_description.sql; versions start at 1 and have no gaps. A
// migration, once released, is never edited: changes go in a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer binary than this one: its schema has versions this binary does not
// know, so reading or writing it could lose data.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// migration is one versioned schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the *.sql files of dir in fsys, ordered by version,
// and checks that the versions run 1, 2, 3... without gaps or duplicates.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql with NNNN >= 1", base)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", base, err)
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (versions start at 1 without gaps or duplicates)", m.name, m.version, i+1)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations in %s", dir)
	}
	return ms, nil
}

const (
	qCreateSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT PRIMARY KEY,
	applied_at BIGINT NOT NULL
)`
	qMaxVersion       = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
	qVersionApplied   = "SELECT COUNT(*) FROM schema_migrations WHERE version = ?"
	qInsertSchemaMigr = "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"
)

// migrate brings the schema of db up to the last of ms. Each migration runs
// in its own transaction together with its schema_migrations row, so a
// failing migration leaves the database at the previous version, and a
// version already recorded is skipped: migrating twice is a no-op. It
// refuses, with ErrSchemaTooNew, a database whose version is beyond ms.
func migrate(ctx context.Context, db *sql.DB, d *dialect, ms []migration, log *slog.Logger) error {
	if _, err := db.ExecContext(ctx, qCreateSchemaMigrations); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := db.QueryRowContext(ctx, qMaxVersion).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	latest := ms[len(ms)-1].version
	if current > latest {
		return fmt.Errorf("database schema version %d, this binary knows up to %d: %w", current, latest, ErrSchemaTooNew)
	}
	for _, m := range ms {
		applied, err := applyMigration(ctx, db, d, m)
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if applied {
			log.InfoContext(ctx, "applied schema migration", "version", m.version, "name", m.name)
		}
	}
	return nil
}

// applyMigration applies m unless it is recorded already, and reports
// whether it did.
func applyMigration(ctx context.Context, db *sql.DB, d *dialect, m migration) (applied bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if !applied {
			// Nothing was written when err is nil (already applied); a
			// failed rollback is reported only beside a real error.
			if rbErr := tx.Rollback(); err != nil && rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
			}
		}
	}()
	var n int
	if err := tx.QueryRowContext(ctx, d.rebind(qVersionApplied), m.version).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, d.schema(m.sql)); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, d.rebind(qInsertSchemaMigr), m.version, time.Now().UTC().UnixNano()); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return true, nil
}
