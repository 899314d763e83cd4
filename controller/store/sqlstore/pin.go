package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrPinMismatch is returned by Pin when the database holds another value.
var ErrPinMismatch = errors.New("differs from the one pinned in the database")

// Pin records value under name the first time, and afterwards checks that
// it is the same: ErrPinMismatch otherwise. Controllers sharing a database
// pin the fingerprints of their keys and CA with it, so a replica started
// from another data directory is refused instead of failing to read what
// the others sealed. Values are fingerprints, never secrets.
func (s *Store) Pin(ctx context.Context, name, value string) error {
	if _, err := s.write.ExecContext(ctx, s.d.rebind("INSERT INTO pins (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"), name, value); err != nil {
		return fmt.Errorf("pin %s: %w", name, err)
	}
	var have string
	err := s.write.QueryRowContext(ctx, s.d.rebind("SELECT value FROM pins WHERE name = ?"), name).Scan(&have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("pin %s: the row vanished", name)
	case err != nil:
		return fmt.Errorf("pin %s: %w", name, err)
	case have != value:
		return fmt.Errorf("%s: this one (%.16s…) %w (%.16s…)", name, value, ErrPinMismatch, have)
	}
	return nil
}
