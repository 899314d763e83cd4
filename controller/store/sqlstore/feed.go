package sqlstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// The change feed (PostgreSQL). A write transaction that queued
// instructions or published events announces them with NOTIFY on one
// channel; PostgreSQL delivers a notification when, and only when, its
// transaction commits (a rolled-back savepoint's is dropped with it), in
// commit order, to every session listening. Each replica listens on a
// connection of its own (Follow) and skips its own announcements: its hub
// already had them.
//
// Announcements carry no data a follower must trust: a wake-up or an event
// seq only makes streams look at the store again. Live progress events,
// though, are passed to operators' watchers as they are, and any role that
// may connect to the database may NOTIFY: so every payload carries an
// HMAC under the controllers' feed key (WithFeedKey, pinned like their
// other keys), and a payload without a valid one is dropped.

// changesChannel is the NOTIFY channel of the change feed.
const changesChannel = "anvil_changes"

// maxPayload keeps a notification under PostgreSQL's 8000-byte limit.
const maxPayload = 7900

// wireChange is a Change as it travels in a notification payload.
type wireChange struct {
	Origin string    `json:"o"`
	Wake   []string  `json:"w,omitempty"`
	Seqs   []wireSeq `json:"e,omitempty"`
	// Live are live progress events, protobuf-encoded.
	Live   [][]byte `json:"p,omitempty"`
	Resync bool     `json:"r,omitempty"`
}

type wireSeq struct {
	Machine string `json:"m"`
	Seq     int64  `json:"s"`
}

// sign prefixes body with its MAC under key: "hex(mac).body".
func sign(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	sum := m.Sum(nil)[:16]
	out := make([]byte, 0, 33+len(body))
	out = hex.AppendEncode(out, sum)
	out = append(out, '.')
	return append(out, body...)
}

// verify returns the body of a payload signed under key.
func verify(key, payload []byte) ([]byte, bool) {
	mac, body, ok := bytes.Cut(payload, []byte("."))
	if !ok || len(mac) != 32 {
		return nil, false
	}
	want := sign(key, body)[:32]
	return body, hmac.Equal(mac, want)
}

// encodeChange is c's payload from origin. Live events that do not fit are
// left out (they are progress, not history); a change that still does not
// fit becomes a resync.
func encodeChange(origin string, c store.Change) ([]byte, error) {
	w := wireChange{Origin: origin, Wake: c.Wake, Resync: c.Resync}
	last := map[string]int64{}
	for _, e := range c.Events {
		if e.GetSeq() == 0 {
			b, err := proto.Marshal(e)
			if err != nil {
				return nil, fmt.Errorf("encode live event: %w", err)
			}
			w.Live = append(w.Live, b)
			continue
		}
		if _, ok := last[e.GetMachineId()]; !ok {
			w.Seqs = append(w.Seqs, wireSeq{Machine: e.GetMachineId()})
		}
		last[e.GetMachineId()] = max(last[e.GetMachineId()], e.GetSeq())
	}
	for i := range w.Seqs {
		w.Seqs[i].Seq = last[w.Seqs[i].Machine]
	}
	b, err := json.Marshal(w)
	if err == nil && len(b) > maxPayload {
		w.Live = nil
		if b, err = json.Marshal(w); err == nil && len(b) > maxPayload {
			b, err = json.Marshal(wireChange{Origin: origin, Resync: true})
		}
	}
	return b, err
}

// decodeChange reads a payload; ok is false for the follower's own
// announcements. A payload it cannot read is a resync.
func decodeChange(origin string, payload []byte) (c store.Change, ok bool, err error) {
	var w wireChange
	if err := json.Unmarshal(payload, &w); err != nil {
		return store.Change{Resync: true}, true, fmt.Errorf("change notification %.64q: %w", payload, err)
	}
	if w.Origin == origin {
		return store.Change{}, false, nil
	}
	c = store.Change{Wake: w.Wake, Resync: w.Resync}
	for _, s := range w.Seqs {
		c.Events = append(c.Events, &anvilv1.Event{MachineId: s.Machine, Seq: s.Seq})
	}
	for _, b := range w.Live {
		e := &anvilv1.Event{}
		if err := proto.Unmarshal(b, e); err != nil {
			return store.Change{Resync: true}, true, fmt.Errorf("change notification: live event: %w", err)
		}
		e.Seq = 0
		c.Events = append(c.Events, e)
	}
	return c, true, nil
}

// Announce implements store.Tx: pg_notify in the transaction on
// PostgreSQL, nothing on SQLite.
func (t *tx) Announce(ctx context.Context, c store.Change) error {
	if !t.d.shared || (len(c.Wake) == 0 && len(c.Events) == 0 && !c.Resync) {
		return nil
	}
	b, err := encodeChange(t.origin, c)
	if err == nil {
		b = sign(t.feedKey, b)
		if ctx, err = t.sctx(ctx); err == nil { // in the shared write batch: never cut off mid-statement
			_, err = t.tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", changesChannel, string(b))
		}
	}
	if err != nil {
		return fmt.Errorf("announce change: %w", err)
	}
	return nil
}

// Follow calls fn with every change other controllers announce on this
// store, in commit order, until ctx ends. It listens on a connection of
// its own and reconnects (every feedRetry) when that connection is lost;
// since announcements made meanwhile are lost, fn then gets a resync. On
// SQLite (one controller) it returns at once.
func (s *Store) Follow(ctx context.Context, fn func(store.Change)) {
	if !s.d.shared {
		return
	}
	s.following.Store(true)
	defer s.following.Store(false)
	for ctx.Err() == nil {
		err := s.listen(ctx, fn)
		s.feedUp.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("change feed lost; reconnecting (streams on this controller re-read the store when it is back)", "err", err, "retry", feedRetry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(feedRetry):
		}
	}
}

// feedRetry is the wait before the change feed reconnects.
const feedRetry = time.Second

func (s *Store) listen(ctx context.Context, fn func(store.Change)) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, s.pgcfg.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		return err
	}
	// The resync (whatever was announced before LISTEN) comes before the
	// feed counts as up: what was learnt before the outage is dropped
	// before anything trusts the feed again (ChangesHeard).
	fn(store.Change{Resync: true})
	s.feedUp.Store(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		body, authentic := verify(s.feedKey, []byte(n.Payload))
		if !authentic {
			s.forged.Add(1)
			if now := time.Now(); now.Sub(s.lastForgedLog) > time.Minute {
				s.lastForgedLog = now
				s.log.Warn("dropped change notifications without a valid MAC (another role NOTIFYing the channel, or a replica with another feed key)",
					"channel", changesChannel, "from_pid", n.PID, "dropped_so_far", s.forged.Load())
			}
			continue
		}
		c, ok, err := decodeChange(s.origin, body)
		if err != nil {
			s.log.Warn("unreadable change notification; resyncing", "err", err)
		}
		if ok {
			fn(c)
		}
	}
}
