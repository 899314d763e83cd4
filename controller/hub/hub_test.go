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
