package server

import "sync"

// perMachine holds a fact the controller derives about each machine and
// keeps in memory only (lost at a restart: what a BMC said, its health, a
// recovery watch), safe for concurrent use. The zero value is empty and
// ready. Bounded by the machines: prune drops those no longer kept.
type perMachine[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// get returns machine id's value and whether it has one.
func (p *perMachine[T]) get(id string) (T, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[id]
	return v, ok
}

// set gives machine id the value v.
func (p *perMachine[T]) set(id string, v T) {
	p.update(id, func(T, bool) (T, bool) { return v, true })
}

// update replaces machine id's value by what fn returns, atomically: fn
// gets the current value (zero and false when none) and returns the new
// one and whether to keep it (false forgets the machine).
func (p *perMachine[T]) update(id string, fn func(v T, ok bool) (T, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[id]
	next, keep := fn(v, ok)
	if !keep {
		delete(p.m, id)
		return
	}
	if p.m == nil {
		p.m = map[string]T{}
	}
	p.m[id] = next
}

// forget drops machine id's value.
func (p *perMachine[T]) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, id)
}

// prune drops the values of machines not in keep.
func (p *perMachine[T]) prune(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.m {
		if !keep[id] {
			delete(p.m, id)
		}
	}
}
