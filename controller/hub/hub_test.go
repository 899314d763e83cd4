package hub

import (
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestNotifyWakesOnlyThatMachineAndCoalesces(t *testing.T) {
	h := New()
	a1, a2, b := h.Subscribe("a"), h.Subscribe("a"), h.Subscribe("b")
	h.Notify("a")
	h.Notify("a") // coalesced: never blocks
	for _, w := range []*Waiter{a1, a2} {
		select {
		case <-w.C():
		default:
			t.Fatal("waiter of a not woken")
		}
		select {
		case <-w.C():
			t.Fatal("two notifications were not coalesced")
		default:
		}
	}
	select {
	case <-b.C():
		t.Fatal("waiter of b woken by a's notification")
	default:
	}
	a1.Close()
	a2.Close()
	if n := h.Waiters("a"); n != 0 {
		t.Fatalf("%d waiters left after Close", n)
	}
	h.Notify("a") // no waiters: no-op
}

func TestWatchFiltersAndOverflows(t *testing.T) {
	h := New()
	all, one := h.Watch("", 2), h.Watch("m1", 10)
	defer all.Close()
	defer one.Close()
	h.Publish(&anvilv1.Event{MachineId: "m1", Seq: 1})
	h.Publish(&anvilv1.Event{MachineId: "m2", Seq: 2})
	if e := <-one.C(); e.GetSeq() != 1 {
		t.Fatalf("m1 watcher got seq %d", e.GetSeq())
	}
	select {
	case e := <-one.C():
		t.Fatalf("m1 watcher got another machine's event %v", e)
	default:
	}
	h.Publish(&anvilv1.Event{MachineId: "m1", Seq: 3}) // third event: the buffer of 2 overflows
	select {
	case <-all.Overflow():
	case <-time.After(time.Second):
		t.Fatal("overflowing watcher not told")
	}
	h.Publish(&anvilv1.Event{MachineId: "m1", Seq: 4}) // publishing after overflow must not block or panic
}

// A machine's waiters can close in any order, twice, and the rest are
// still woken: closing the first, a middle and the last one each leave the
// others subscribed.
func TestWaitersCloseInAnyOrder(t *testing.T) {
	h := New()
	woken := func(w *Waiter) bool {
		select {
		case <-w.C():
			return true
		default:
			return false
		}
	}
	ws := []*Waiter{h.Subscribe("m"), h.Subscribe("m"), h.Subscribe("m"), h.Subscribe("m")}
	open := map[int]bool{0: true, 1: true, 2: true, 3: true}
	for _, closing := range []int{1, 3, 1, 0} { // a middle one, the last subscribed (the list's head), again, the first subscribed (its end)
		ws[closing].Close()
		delete(open, closing)
		h.Notify("m")
		for i, w := range ws {
			if got := woken(w); got != open[i] {
				t.Fatalf("after closing waiter %d: waiter %d woken %v, want %v", closing, i, got, open[i])
			}
		}
		if n := h.Waiters("m"); n != len(open) {
			t.Fatalf("after closing waiter %d: Waiters = %d, want %d", closing, n, len(open))
		}
	}
	h.WakeAll()
	if !woken(ws[2]) {
		t.Fatal("WakeAll missed the last open waiter")
	}
	ws[2].Close()
	if n := h.Waiters("m"); n != 0 || len(h.waiters) != 0 {
		t.Fatalf("all closed: Waiters = %d, %d machines listed", n, len(h.waiters))
	}
}
