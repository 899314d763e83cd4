package lldp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/proto"
)

func neighbor(chassis, port, name string, ttl uint32) *anvilv1.LLDPNeighbor {
	return &anvilv1.LLDPNeighbor{ChassisId: chassis, ChassisIdSubtype: "local", PortId: port, PortIdSubtype: "local", SystemName: name, TtlSeconds: ttl}
}

func up(v bool) func() bool { return func() bool { return v } }

// waited runs Wait and returns how long it took.
func waited(t *testing.T, c *Collector, ctx context.Context, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.Wait(ctx, max); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return time.Since(start)
}

// TestWaitBounds: Wait ends at the first of: every up interface heard,
// first frame + grace, the maximum; at once with nothing up to hear.
func TestWaitBounds(t *testing.T) {
	ctx := context.Background()
	const slack = 150 * time.Millisecond

	t.Run("no interface", func(t *testing.T) {
		if d := waited(t, New(), ctx, 5*time.Second); d > slack {
			t.Errorf("waited %v with no interface", d)
		}
	})
	t.Run("nothing heard: the maximum", func(t *testing.T) {
		c := New(WithGrace(time.Second))
		c.add("eth0", up(true))
		if d := waited(t, c, ctx, 300*time.Millisecond); d < 300*time.Millisecond || d > 300*time.Millisecond+slack {
			t.Errorf("waited %v, want the 300ms maximum", d)
		}
	})
	t.Run("every up interface heard: at once", func(t *testing.T) {
		c := New(WithGrace(5 * time.Second))
		c.add("eth0", up(true))
		c.add("eth1", up(true))
		c.add("eth2", up(false)) // down: not waited for
		c.record("eth0", neighbor("sw1", "p1", "leaf", 120))
		go func() {
			time.Sleep(100 * time.Millisecond)
			c.record("eth1", neighbor("sw2", "p1", "leaf2", 120))
		}()
		if d := waited(t, c, ctx, 5*time.Second); d < 100*time.Millisecond || d > 100*time.Millisecond+slack {
			t.Errorf("waited %v, want about 100ms (the second interface's frame)", d)
		}
	})
	t.Run("one heard, one silent: first frame plus grace", func(t *testing.T) {
		c := New(WithGrace(300 * time.Millisecond))
		c.add("eth0", up(true))
		c.add("eth1", up(true))
		go func() {
			time.Sleep(100 * time.Millisecond)
			c.record("eth0", neighbor("sw1", "p1", "leaf", 120))
		}()
		if d := waited(t, c, ctx, 5*time.Second); d < 400*time.Millisecond || d > 400*time.Millisecond+slack {
			t.Errorf("waited %v, want about 400ms (frame at 100ms + 300ms grace)", d)
		}
	})
	t.Run("grace over before the wait: at once", func(t *testing.T) {
		c := New(WithGrace(50 * time.Millisecond))
		c.add("eth0", up(true))
		c.add("eth1", up(true))
		c.record("eth0", neighbor("sw1", "p1", "leaf", 120))
		time.Sleep(60 * time.Millisecond)
		if d := waited(t, c, ctx, 5*time.Second); d > slack {
			t.Errorf("waited %v after the grace ran out", d)
		}
	})
	t.Run("an interface coming up is waited for", func(t *testing.T) {
		c := New(WithGrace(5 * time.Second))
		var linkUp atomic.Bool
		c.add("eth0", linkUp.Load)
		c.add("eth1", up(true))
		c.record("eth1", neighbor("sw1", "p1", "leaf", 120))
		linkUp.Store(true)
		if d := waited(t, c, ctx, 400*time.Millisecond); d < 400*time.Millisecond {
			t.Errorf("waited %v, want the maximum: eth0 came up and heard nothing", d)
		}
	})
	t.Run("context", func(t *testing.T) {
		c := New()
		c.add("eth0", up(true))
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := c.Wait(ctx, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait = %v, want the context's deadline", err)
		}
	})
}

// TestNeighbors: the latest LLDPDU per chassis and port counts, TTL 0
// removes a neighbour, an expired TTL hides it, frames for interfaces not
// listened on are dropped.
func TestNeighbors(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	c := New(withClock(clock))
	c.add("eth0", nil)
	c.record("eth0", neighbor("sw1", "p1", "old name", 120))
	c.record("eth0", neighbor("sw1", "p1", "leaf-1", 120)) // replaces
	c.record("eth0", neighbor("sw0", "p9", "leaf-0", 10))
	c.record("eth0", neighbor("sw2", "p2", "leaf-2", 120))
	c.record("eth0", neighbor("sw2", "p2", "leaf-2", 0)) // shutdown
	c.record("eth9", neighbor("sw1", "p1", "elsewhere", 120))

	want := []*anvilv1.LLDPNeighbor{neighbor("sw0", "p9", "leaf-0", 10), neighbor("sw1", "p1", "leaf-1", 120)}
	if got := c.Neighbors("eth0"); !equal(got, want) {
		t.Errorf("Neighbors = %v, want %v", got, want)
	}
	got := c.Neighbors("eth0")
	got[0].SystemName = "changed by the caller"
	if again := c.Neighbors("eth0"); again[0].SystemName != "leaf-0" {
		t.Errorf("Neighbors hands out its own records: %v", again)
	}
	advance(11 * time.Second)
	if got := c.Neighbors("eth0"); !equal(got, want[1:]) {
		t.Errorf("after 11 s: %v, want only the 120 s neighbour", got)
	}
	if got := c.Neighbors("eth9"); got != nil {
		t.Errorf("an interface never listened on: %v", got)
	}
	if ifs := c.Interfaces(); len(ifs) != 1 || ifs[0] != "eth0" {
		t.Errorf("Interfaces = %v", ifs)
	}
}

func TestObserveRejectsMalformed(t *testing.T) {
	c := New()
	c.add("eth0", nil)
	if err := c.observe("eth0", ethHeader); !errors.Is(err, ErrMalformed) {
		t.Fatalf("observe = %v", err)
	}
	if err := c.observe("eth0", concat(ethHeader, minimal)); err != nil {
		t.Fatal(err)
	}
	if got := c.Neighbors("eth0"); len(got) != 1 || got[0].ChassisId != "sw1" {
		t.Errorf("Neighbors = %v", got)
	}
}

func equal(a, b []*anvilv1.LLDPNeighbor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// A flood of forged neighbours (one new chassis ID per frame) costs at
// most MaxNeighbors entries; an expired one makes room again; a known
// neighbour is still refreshed while the table is full.
func TestNeighborsBounded(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c := New(withClock(clock))
	c.add("eth0", nil)
	c.record("eth0", neighbor("switch", "p1", "leaf-1", 120))
	c.record("eth0", neighbor("short", "p1", "gone soon", 5))
	for i := range 10000 {
		c.record("eth0", neighbor(fmt.Sprintf("forged-%d", i), "p", "x", 65535))
	}
	got := c.Neighbors("eth0")
	if len(got) != MaxNeighbors {
		t.Fatalf("%d neighbours after a flood, want the bound %d", len(got), MaxNeighbors)
	}
	if !slices.ContainsFunc(got, func(n *anvilv1.LLDPNeighbor) bool { return n.ChassisId == "switch" }) {
		t.Error("the first (real) neighbour was pushed out by the flood")
	}
	c.record("eth0", neighbor("switch", "p1", "leaf-1 renamed", 120))
	if !slices.ContainsFunc(c.Neighbors("eth0"), func(n *anvilv1.LLDPNeighbor) bool { return n.SystemName == "leaf-1 renamed" }) {
		t.Error("a known neighbour is not refreshed while the table is full")
	}
	advance(6 * time.Second)
	c.record("eth0", neighbor("late", "p1", "after expiry", 120))
	if !slices.ContainsFunc(c.Neighbors("eth0"), func(n *anvilv1.LLDPNeighbor) bool { return n.ChassisId == "late" }) {
		t.Error("an expired neighbour does not make room")
	}
}
