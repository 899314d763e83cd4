package sqlstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/anvil-metal/anvil/controller/store"
)

// dialect holds the few things in which the SQL of SQLite and PostgreSQL
// differ. Queries and migrations are written once, in standard SQL with "?"
// placeholders and the tokens in ddl; everything else (ON CONFLICT,
// RETURNING, NULLS FIRST, partial indexes, BIGINT, BOOLEAN) is common to both.
type dialect struct {
	name string
	// numbered placeholders ($1, $2, ...) instead of "?".
	numbered bool
	// ddl maps the tokens used in migrations to this dialect's types.
	ddl map[string]string
	// uniqueViolation and foreignKeyViolation classify driver errors.
	uniqueViolation     func(error) bool
	foreignKeyViolation func(error) bool
	// shared: several controllers may use the database at once
	// (replica.go); lockWrites, run first in every write transaction,
	// makes their write transactions apply one at a time.
	shared     bool
	lockWrites string
	// detach runs the statements of read transactions without their
	// caller's cancellation (write transactions always do: tx.detach). A
	// SQLite statement is a local call of microseconds and runs to its
	// end; cancelling one mid-way would cost a goroutine for every
	// statement (the driver's interrupt watcher), so a cancelled caller
	// is refused before its next statement instead. PostgreSQL's reads
	// keep the context: a read stuck on a lost server gives up with its
	// caller.
	detach bool
}

// Tokens that migrations use where the two dialects differ.
const (
	tokenSerialPK = "{{serial_pk}}" // auto-incrementing 64-bit primary key
	tokenBytes    = "{{bytes}}"     // binary column
)

func sqliteDialect() *dialect {
	code := func(err error) int {
		var e *sqlite.Error
		if errors.As(err, &e) {
			return e.Code()
		}
		return 0
	}
	return &dialect{
		name:   "sqlite",
		detach: true,
		ddl: map[string]string{
			// AUTOINCREMENT: a seq is never reused, even after the newest
			// events were deleted, so watchers resuming after a seq miss
			// nothing.
			tokenSerialPK: "INTEGER PRIMARY KEY AUTOINCREMENT",
			tokenBytes:    "BLOB",
		},
		uniqueViolation: func(err error) bool {
			c := code(err)
			return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
		},
		foreignKeyViolation: func(err error) bool {
			return code(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
		},
	}
}

// postgresDialect is the PostgreSQL side of the abstraction. Errors are
// classified by SQLSTATE through the SQLState method of pgx's
// *pgconn.PgError.
func postgresDialect() *dialect {
	state := func(err error) string {
		var e interface{ SQLState() string }
		if errors.As(err, &e) {
			return e.SQLState()
		}
		return ""
	}
	return &dialect{
		name:     "postgres",
		numbered: true,
		shared:   true,
		// Held until commit: write transactions of all replicas apply in
		// one order, as one controller's do. Row locks alone would let two
		// replicas' batches deadlock (machine X then Y against Y then X)
		// and lose updates (both read a machine, both write it back), and
		// event seqs could commit out of order, so a watcher resuming
		// after seq 11 would never see a seq 10 committed later.
		lockWrites: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", writerLock),
		ddl: map[string]string{
			tokenSerialPK: "BIGSERIAL PRIMARY KEY",
			tokenBytes:    "BYTEA",
		},
		uniqueViolation:     func(err error) bool { return state(err) == "23505" },
		foreignKeyViolation: func(err error) bool { return state(err) == "23503" },
	}
}

// rebind rewrites the "?" placeholders of q for the dialect. A "?" inside a
// single-quoted string literal is left alone.
func (d *dialect) rebind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// schema replaces the dialect tokens of a migration.
func (d *dialect) schema(src string) string {
	for tok, typ := range d.ddl {
		src = strings.ReplaceAll(src, tok, typ)
	}
	return src
}

// classify maps constraint violations to the store's sentinels. The result
// wraps both the sentinel and the driver error; other errors are returned
// as they are.
func (d *dialect) classify(err error, onForeignKey error) error {
	switch {
	case err == nil:
		return nil
	case d.uniqueViolation(err):
		return &constraintError{sentinel: store.ErrAlreadyExists, err: err}
	case onForeignKey != nil && d.foreignKeyViolation(err):
		return &constraintError{sentinel: onForeignKey, err: err}
	}
	return err
}

// constraintError is a driver's constraint violation classified as one of
// the store's sentinels.
type constraintError struct {
	sentinel error
	err      error
}

func (e *constraintError) Error() string   { return e.sentinel.Error() + ": " + e.err.Error() }
func (e *constraintError) Unwrap() []error { return []error{e.sentinel, e.err} }
