package server

import (
	"database/sql/driver"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A lost database connection (a restart, a session the server ended) is
// Unavailable, which agents and operators retry, not Internal.
func TestLostDatabaseConnectionIsUnavailable(t *testing.T) {
	err := fmt.Errorf("register m-1: %w", fmt.Errorf("write transaction aborted: %w", fmt.Errorf("rollback to savepoint: %w", driver.ErrBadConn)))
	if got := status.Code(toStatus(err)); got != codes.Unavailable {
		t.Errorf("toStatus(%v) = %s, want Unavailable", err, got)
	}
}
