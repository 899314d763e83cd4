package bootobs

import (
	"fmt"
	"testing"
	"time"
)

func TestBookBoundsAndRate(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := New(Limits{Keys: 3, PerKey: 2, MinGap: time.Second})
	// Ten requests of one machine within a second: one kept.
	for i := range 10 {
		b.Add(Observation{Time: t0.Add(time.Duration(i) * 50 * time.Millisecond), UUID: "u1", MAC: "aa", Served: "agent"})
	}
	got, sup := b.For("u1", nil, time.Time{})
	if len(got) != 1 || sup != 9 {
		t.Fatalf("flood within MinGap: kept %d, suppressed %d; want 1 and 9", len(got), sup)
	}
	// Spaced requests: only the newest PerKey kept, newest first.
	for i := 1; i <= 3; i++ {
		if !b.Add(Observation{Time: t0.Add(time.Duration(i) * 2 * time.Second), UUID: "u1", Served: fmt.Sprint(i)}) {
			t.Fatalf("spaced request %d not kept", i)
		}
	}
	got, _ = b.For("u1", nil, time.Time{})
	if len(got) != 2 || got[0].Served != "3" || got[1].Served != "2" {
		t.Fatalf("kept %+v, want the two newest, newest first", got)
	}
	if got, _ := b.For("u1", nil, t0.Add(5*time.Second)); len(got) != 1 || got[0].Served != "3" {
		t.Fatalf("since filter: %+v", got)
	}
	// A MAC-only request is found by the machine's MACs.
	b.Add(Observation{Time: t0, MAC: "bb", Served: "mac"})
	if got, _ := b.For("u1", []string{"bb"}, time.Time{}); len(got) != 3 {
		t.Fatalf("by uuid and mac: %d observations, want 3", len(got))
	}
	// Inventing keys never grows the book past Keys; the oldest go first.
	for i := range 100 {
		b.Add(Observation{Time: t0.Add(time.Hour + time.Duration(i)*time.Second), UUID: fmt.Sprintf("x%d", i)})
	}
	if n := b.Len(); n != 3 {
		t.Fatalf("book holds %d keys, want the cap 3", n)
	}
	if got, _ := b.For("x99", nil, time.Time{}); len(got) != 1 {
		t.Fatal("the newest key was evicted")
	}
	if got, _ := b.For("u1", nil, time.Time{}); len(got) != 0 {
		t.Fatal("the oldest key survived eviction")
	}
	if b.Add(Observation{Time: t0}) {
		t.Fatal("an observation without UUID and MAC was kept")
	}
}
