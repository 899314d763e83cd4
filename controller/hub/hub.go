// Package hub wakes the controller's long-lived streams: a Wait stream is
// woken the moment an instruction is queued for its machine, and event
// watchers receive every event as soon as its transaction has committed.
//
// The hub carries no data that is not also in the store: a wake-up only tells
// a Wait stream to look at the store again, and watchers replay from the
// store before they follow the hub, so a missed wake-up is never a lost
// instruction or event.
package hub

import (
	"math"
	"sync"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Hub fans out wake-ups and events. The zero value is not usable; call New.
type Hub struct {
	mu sync.Mutex
	// waiters holds each machine's first waiter; the rest follow it in a
	// list through the waiters themselves, so a machine's subscription
	// costs one allocation besides its channel (10,000 waiting machines
	// keep one each).
	waiters  map[string]*Waiter
	watchers map[*Watcher]struct{}
}

// New returns an empty hub.
func New() *Hub {
	return &Hub{
		waiters:  make(map[string]*Waiter),
		watchers: make(map[*Watcher]struct{}),
	}
}

// Waiter is one Wait stream's subscription for its machine.
type Waiter struct {
	h          *Hub
	machineID  string
	c          chan struct{}
	prev, next *Waiter // the machine's other waiters; guarded by h.mu
	closed     bool    // guarded by h.mu
}

// C is signalled (coalesced: at most one pending signal) on every Notify for
// the machine.
func (w *Waiter) C() <-chan struct{} { return w.c }

// Close unsubscribes. Closing again does nothing.
func (w *Waiter) Close() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	if w.next != nil {
		w.next.prev = w.prev
	}
	switch {
	case w.prev != nil:
		w.prev.next = w.next
	case w.next != nil:
		w.h.waiters[w.machineID] = w.next
	default:
		delete(w.h.waiters, w.machineID)
	}
	w.prev, w.next = nil, nil
}

// wake signals w without blocking: a wake-up already pending is enough.
func (w *Waiter) wake() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// Subscribe registers a waiter for machineID. Subscribe before reading the
// store so a Notify between the read and the wait is not missed.
func (h *Hub) Subscribe(machineID string) *Waiter {
	w := &Waiter{h: h, machineID: machineID, c: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if first := h.waiters[machineID]; first != nil {
		w.next, first.prev = first, w
	}
	h.waiters[machineID] = w
	return w
}

// Notify wakes every waiter of machineID. It never blocks.
func (h *Hub) Notify(machineID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := h.waiters[machineID]; w != nil; w = w.next {
		w.wake()
	}
}

// WakeAll wakes every waiter and makes every watcher look at the store
// again (a marker event with the highest seq: watchers replay after the
// last seq they sent), after wake-ups may have been missed.
func (h *Hub) WakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, first := range h.waiters {
		for w := first; w != nil; w = w.next {
			w.wake()
		}
	}
	for w := range h.watchers {
		h.send(w, &anvilv1.Event{MachineId: w.machineID, Seq: math.MaxInt64})
	}
}

// Waiters reports how many Wait subscriptions machineID has (for tests and
// metrics).
func (h *Hub) Waiters(machineID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for w := h.waiters[machineID]; w != nil; w = w.next {
		n++
	}
	return n
}

// Watcher receives published events, optionally for one machine only.
type Watcher struct {
	h         *Hub
	machineID string
	c         chan *anvilv1.Event
	overflow  chan struct{}
	once      sync.Once
}

// C delivers events in publication order.
func (w *Watcher) C() <-chan *anvilv1.Event { return w.c }

// Overflow is closed when the watcher fell behind by more than its buffer
// and events were dropped; the consumer must resume from the store.
func (w *Watcher) Overflow() <-chan struct{} { return w.overflow }

// Close unsubscribes.
func (w *Watcher) Close() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	delete(w.h.watchers, w)
}

// Watch subscribes to events of machineID ("" for every machine), buffering
// up to buffer events.
func (h *Hub) Watch(machineID string, buffer int) *Watcher {
	if buffer < 1 {
		buffer = 1
	}
	w := &Watcher{h: h, machineID: machineID, c: make(chan *anvilv1.Event, buffer), overflow: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers[w] = struct{}{}
	return w
}

// Publish hands e to every matching watcher without blocking; a watcher
// whose buffer is full is marked overflowed and removed.
func (h *Hub) Publish(e *anvilv1.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		if w.machineID != "" && w.machineID != e.GetMachineId() {
			continue
		}
		h.send(w, e)
	}
}

// send hands e to w, or marks w overflowed and removes it; h.mu is held.
func (h *Hub) send(w *Watcher, e *anvilv1.Event) {
	select {
	case w.c <- e:
	default:
		w.once.Do(func() { close(w.overflow) })
		delete(h.watchers, w)
	}
}
