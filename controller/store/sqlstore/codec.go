package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
)

// Encodings shared by every table:
//
//   - protobuf messages: deterministic binary proto.Marshal output. Binary
//     rather than protojson because it is several times faster and smaller
//     (inventories are the bulk of the data and are written on every
//     registration), and unknown fields written by a newer binary survive a
//     round trip through an older one. A nil message is SQL NULL; an empty
//     message is an empty value, and queries select "col IS NOT NULL" beside
//     the column so that the two stay distinct even though the SQLite
//     driver reads an empty blob back as nil.
//   - lifecycle.Status, MAC lists and labels: JSON text.
//   - times: UTC unix nanoseconds in a BIGINT, exact to the nanosecond; the
//     zero time (or a nil Timestamp) is NULL. Times must lie in the years
//     1678 to 2261, the range of int64 nanoseconds.

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

func encTime(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	t = t.UTC()
	if y := t.Year(); y < 1678 || y > 2261 {
		return nil, fmt.Errorf("time %s out of range (years 1678 to 2261)", t.Format(time.RFC3339Nano))
	}
	return t.UnixNano(), nil
}

func decTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func encTimestamp(ts *timestamppb.Timestamp) (any, error) {
	if ts == nil {
		return nil, nil
	}
	if err := ts.CheckValid(); err != nil {
		return nil, err
	}
	t := ts.AsTime()
	if t.IsZero() {
		// The zero time.Time is a valid Timestamp; NULL would read back as
		// nil, so it is out of range like every other year-1 time.
		return nil, fmt.Errorf("time %s out of range (years 1678 to 2261)", t.Format(time.RFC3339Nano))
	}
	return encTime(t)
}

func decTimestamp(n sql.NullInt64) *timestamppb.Timestamp {
	if !n.Valid {
		return nil
	}
	return timestamppb.New(time.Unix(0, n.Int64))
}

// encMsg marshals m; nil (including a typed nil pointer) is SQL NULL and an
// empty message is a non-nil empty slice.
func encMsg(m proto.Message) ([]byte, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// decMsg unmarshals b into a new T, or returns nil when the column was NULL.
func decMsg[T any, PT interface {
	*T
	proto.Message
}](b []byte, present bool) (PT, error) {
	if !present {
		return nil, nil
	}
	m := PT(new(T))
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func encStatus(st lifecycle.Status) (string, error) {
	st.LastEventTime = st.LastEventTime.UTC()
	st.ReclaimSince = st.ReclaimSince.UTC()
	b, err := json.Marshal(st)
	return string(b), err
}

func decStatus(s string) (lifecycle.Status, error) {
	var st lifecycle.Status
	err := json.Unmarshal([]byte(s), &st)
	return st, err
}

func encTrust(t store.Trust) (string, error) {
	t.BootTokensBefore = t.BootTokensBefore.UTC()
	t.ExpectBootUntil = t.ExpectBootUntil.UTC()
	t.ExpectBootSince = t.ExpectBootSince.UTC()
	b, err := json.Marshal(t)
	return string(b), err
}

func decTrust(s string) (store.Trust, error) {
	var t store.Trust
	err := json.Unmarshal([]byte(s), &t)
	return t, err
}

// encJSON is for MAC lists and labels: nil encodes as "null" and reads back
// as nil, empty as "[]" or "{}" and reads back empty.
func encJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
