package backoff

import (
	"context"
	"testing"
	"time"
)

func TestCeilingDoublesAndCaps(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Cap: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Ceiling(i); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1000); got != time.Second {
		t.Errorf("Ceiling(1000) = %v, want cap (no overflow)", got)
	}
}

func TestDelayIsJitteredWithinCeiling(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		p := Policy{Base: time.Second, Cap: 8 * time.Second, Rand: func() float64 { return r }}
		got := p.Delay(2)
		want := time.Duration(r * float64(4*time.Second))
		if got != want {
			t.Errorf("rand %v: Delay(2) = %v, want %v", r, got, want)
		}
	}
	p := Default()
	seen := map[time.Duration]bool{}
	for range 50 {
		d := p.Delay(5)
		if d < 0 || d > p.Ceiling(5) {
			t.Fatalf("Delay(5) = %v outside [0, %v]", d, p.Ceiling(5))
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct delays in 50 draws: not jittered", len(seen))
	}
}

func TestSleepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := Policy{Base: time.Hour, Cap: time.Hour, Rand: func() float64 { return 1 }}
	if err := p.Sleep(ctx, 0); err != context.Canceled {
		t.Fatalf("Sleep on cancelled ctx = %v, want context.Canceled", err)
	}
}
