package server

import (
	"context"
	"errors"
	"time"

	"github.com/anvil-metal/anvil/controller/store"
)

// Heartbeats cost no store write each. The controller keeps the time it
// last heard each agent in memory (lastSeen) and writes it in batches
// (FlushSeen, every SeenFlushInterval, one transaction): a machine's
// stored LastSeen is brought forward once it lags by SeenFlushLag or more.
// Everything this controller decides reads the newer of the two (seenAt);
// another replica reads the stored one, at most SeenFlushLag +
// SeenFlushInterval behind (20 s by default, inside the 30 s LiveWindow
// within which a live session is protected from takeover).
//
// With the production heartbeat (10 s), each machine is written every
// 20 s instead of every 10 s, and 10,000 agents cost 500 rows in five
// write transactions a second instead of 1,000 transactions a second.

// seen is what lastSeen keeps of one machine.
type seen struct {
	at      time.Time // the agent was last heard
	written time.Time // the newest LastSeen this controller stored
}

// lastSeen holds the in-memory last-seen times.
type lastSeen struct {
	perMachine[seen]
}

// noteSeen records that machine id's agent was heard at now.
func (s *Server) noteSeen(id string, now time.Time) {
	s.seen.update(id, func(v seen, _ bool) (seen, bool) {
		if now.After(v.at) {
			v.at = now
		}
		return v, true
	})
}

// noteWritten records that machine id's LastSeen was stored as at.
func (s *Server) noteWritten(id string, at time.Time) {
	s.seen.update(id, func(v seen, _ bool) (seen, bool) {
		if at.After(v.at) {
			v.at = at
		}
		if at.After(v.written) {
			v.written = at
		}
		return v, true
	})
}

// seenAt is when m's agent was last heard: the stored time, or this
// controller's newer one.
func (s *Server) seenAt(m *store.Machine) time.Time {
	if v, ok := s.seen.get(m.ID); ok && v.at.After(m.LastSeen) {
		return v.at
	}
	return m.LastSeen
}

// seenChunk bounds the rows of one last-seen write transaction.
const seenChunk = 100

// FlushSeen stores, in transactions of up to seenChunk rows, the last-seen times that lag the
// stored ones by SeenFlushLag or more (all of them with all: at shutdown),
// and drops what it keeps of machines unheard for the dead timeout. It
// returns how many machines it wrote.
func (s *Server) FlushSeen(ctx context.Context, all bool) (int, error) {
	lag := s.cfg.SeenFlushLag
	if all {
		lag = time.Nanosecond
	}
	type due struct {
		id string
		at time.Time
	}
	var batch []due
	s.seen.mu.Lock()
	dead := s.now().Add(-s.cfg.Lifecycle.DeadTimeout)
	for id, v := range s.seen.m {
		switch {
		case v.at.Sub(v.written) >= lag:
			batch = append(batch, due{id, v.at})
		case v.at.Before(dead):
			delete(s.seen.m, id)
		}
	}
	s.seen.mu.Unlock()
	if len(batch) == 0 {
		return 0, nil
	}
	// In transactions of at most seenChunk rows: with replicas every
	// write transaction holds the database's writer lock, and one of
	// thousands of rows would hold registrations up for its whole length.
	var gone []string
	for i := 0; i < len(batch); i += seenChunk {
		chunk := batch[i:min(i+seenChunk, len(batch))]
		var g []string
		err := s.store.Tx(ctx, func(tx store.Tx) error {
			g = g[:0]
			for _, d := range chunk {
				err := tx.TouchMachine(ctx, d.id, d.at)
				if errors.Is(err, store.ErrNotFound) {
					g = append(g, d.id)
					continue
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return i - len(gone), err
		}
		for _, d := range chunk {
			s.noteWritten(d.id, d.at)
		}
		gone = append(gone, g...)
	}
	for _, id := range gone {
		s.seen.forget(id)
	}
	return len(batch) - len(gone), nil
}
