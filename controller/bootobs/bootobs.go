// Package bootobs keeps what the boot service saw of network boots, in
// memory, bounded and rate limited. Observations come from
// unauthenticated requests (anyone on the boot network can send them), so
// they are only shown to operators and quoted by the next authenticated
// event of the machine; they never move a machine's state.
package bootobs

import (
	"sort"
	"sync"
	"time"
)

// Observation is one boot script request.
type Observation struct {
	Time time.Time
	// Client is the address the script was served to.
	Client string
	UUID   string
	MAC    string
	// Platform is iPXE's ${platform} ("pcbios", "efi" or "").
	Platform string
	// Served says what the client got ("agent", "local", "exit …").
	Served string
}

// Limits bound a Book.
type Limits struct {
	// Keys is how many UUIDs/MACs are tracked at most; the least recently
	// seen is dropped first.
	Keys int
	// PerKey is how many observations are kept per key (newest).
	PerKey int
	// MinGap is the shortest interval between two kept observations of one
	// key; requests in between are counted, not kept.
	MinGap time.Duration
}

// DefaultLimits keeps 4 observations of up to 4096 keys, one per second.
func DefaultLimits() Limits { return Limits{Keys: 4096, PerKey: 4, MinGap: time.Second} }

type entry struct {
	obs        []Observation // oldest first
	last       time.Time     // last request, kept or not
	suppressed int
}

// Book is a bounded set of observations, safe for concurrent use.
type Book struct {
	lim     Limits
	mu      sync.Mutex
	entries map[string]*entry
}

// New returns an empty Book; zero limits take DefaultLimits' values.
func New(lim Limits) *Book {
	d := DefaultLimits()
	if lim.Keys <= 0 {
		lim.Keys = d.Keys
	}
	if lim.PerKey <= 0 {
		lim.PerKey = d.PerKey
	}
	if lim.MinGap < 0 {
		lim.MinGap = 0
	}
	return &Book{lim: lim, entries: map[string]*entry{}}
}

// key is the UUID when there is one, else the MAC.
func key(uuid, mac string) string {
	if uuid != "" {
		return "uuid " + uuid
	}
	return "mac " + mac
}

// Add records o and reports whether it was kept (false: rate limited).
func (b *Book) Add(o Observation) bool {
	if o.UUID == "" && o.MAC == "" {
		return false
	}
	k := key(o.UUID, o.MAC)
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[k]
	if e == nil {
		if len(b.entries) >= b.lim.Keys {
			b.evictOldest()
		}
		e = &entry{}
		b.entries[k] = e
	}
	gap := o.Time.Sub(e.last)
	e.last = o.Time
	if len(e.obs) > 0 && gap < b.lim.MinGap {
		e.suppressed++
		return false
	}
	e.obs = append(e.obs, o)
	if len(e.obs) > b.lim.PerKey {
		e.obs = append(e.obs[:0], e.obs[len(e.obs)-b.lim.PerKey:]...)
	}
	return true
}

func (b *Book) evictOldest() {
	var oldest string
	var at time.Time
	for k, e := range b.entries {
		if oldest == "" || e.last.Before(at) {
			oldest, at = k, e.last
		}
	}
	delete(b.entries, oldest)
}

// For returns the kept observations of a machine (its UUID and its MACs)
// newer than since, newest first, and how many more requests were counted
// but not kept.
func (b *Book) For(uuid string, macs []string, since time.Time) ([]Observation, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Observation
	suppressed := 0
	seen := map[string]bool{}
	keys := []string{}
	if uuid != "" {
		keys = append(keys, key(uuid, ""))
	}
	for _, m := range macs {
		keys = append(keys, key("", m))
	}
	for _, k := range keys {
		e := b.entries[k]
		if e == nil || seen[k] {
			continue
		}
		seen[k] = true
		suppressed += e.suppressed
		for _, o := range e.obs {
			if o.Time.After(since) {
				out = append(out, o)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, suppressed
}

// Len is the number of keys tracked.
func (b *Book) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}
