package server

import (
	"sync"
	"time"
)

// Heartbeats are authenticated without a store read. At 10,000 agents a
// controller answers 1,000 heartbeats a second; each looked its
// credential up in the store (with replicas, a PostgreSQL round trip),
// which was most of an idle fleet's cost. credCache remembers which
// machine a credential hash belongs to, for Heartbeat only: every other
// agent call (Register, Wait, Report) still reads the store, and a
// Heartbeat does nothing but note that the machine's agent was heard.
//
// An entry goes when the machine is woken (hub.Notify, here or, through
// the change feed, on another replica): every change of a machine's
// credential (a registration, a power cut, a recovery power cycle, a
// delete) wakes it, because its Wait streams must end then too. A feed
// resync or a lost feed clears everything (clear). An entry is also at
// most credTTL old, which bounds what a missed wake could cost: a revoked
// credential's heartbeats counted as heard for that long.
//
// A lookup that raced with a wake must not cache what it read before the
// wake: put is given the generation seen before the store read and
// caches nothing if any wake came since.
type credCache struct {
	mu        sync.Mutex
	gen       uint64
	byHash    map[string]credEntry // string(credential hash) → entry
	byMachine map[string]string    // machine id → its cached hash
}

type credEntry struct {
	id string
	at time.Time // when the store said so
}

// credTTL is the oldest an entry may be.
const credTTL = 30 * time.Second

// credCacheMax bounds the entries (one per live agent); beyond it nothing
// more is cached and those heartbeats read the store.
const credCacheMax = 200_000

// generation is read before a store lookup and given to put after it.
func (c *credCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the machine the credential hash belongs to, if cached and
// younger than credTTL at now.
func (c *credCache) get(hash []byte, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byHash[string(hash)]
	if !ok || now.Sub(e.at) >= credTTL || now.Before(e.at) {
		return "", false
	}
	return e.id, true
}

// put caches that hash belongs to machine id, as the store said at now,
// unless a wake came after generation gen was read.
func (c *credCache) put(hash []byte, id string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.byHash == nil {
		c.byHash, c.byMachine = map[string]credEntry{}, map[string]string{}
	}
	if old, ok := c.byMachine[id]; ok {
		delete(c.byHash, old) // a machine has one credential at a time
	} else if len(c.byHash) >= credCacheMax {
		return
	}
	c.byHash[string(hash)] = credEntry{id: id, at: now}
	c.byMachine[id] = string(hash)
}

// forget drops what is cached of machine id (it was woken: its credential
// may have changed).
func (c *credCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if h, ok := c.byMachine[id]; ok {
		delete(c.byHash, h)
		delete(c.byMachine, id)
	}
}

// clear drops everything (every stream is woken: changes may have been
// missed).
func (c *credCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.byHash, c.byMachine = nil, nil
}
