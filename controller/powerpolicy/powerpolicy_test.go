package powerpolicy

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want Condition
	}{
		{nil, Healthy},
		{fmt.Errorf("ipmi x: %w: rakp", bmc.ErrAuth), BadCredentials},
		{fmt.Errorf("ipmi x: %w", bmc.ErrUnreachable), Unreachable},
		{fmt.Errorf("redfish x: %w", bmc.ErrProtocol), Garbage},
		{fmt.Errorf("ipmi x: %w", bmc.ErrRefused), Refused},
		{errors.New("sealed with another key"), Refused},
	} {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestBackoffWait(t *testing.T) {
	b := Backoff{First: time.Minute, Max: 30 * time.Minute}
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 5: 16 * time.Minute,
		6: 30 * time.Minute, 7: 30 * time.Minute, 1000: 30 * time.Minute, 0: time.Minute} {
		if got := b.Wait(n); got != want {
			t.Errorf("Wait(%d) = %v, want %v", n, got, want)
		}
	}
	if got := (Backoff{First: time.Hour, Max: time.Minute}).Wait(3); got != time.Hour {
		t.Errorf("a Max below First: %v, want First", got)
	}
}

func TestObserve(t *testing.T) {
	b := Backoff{First: time.Minute, Max: 4 * time.Minute}
	auth := fmt.Errorf("%w", bmc.ErrAuth)
	down := fmt.Errorf("%w", bmc.ErrUnreachable)
	junk := fmt.Errorf("%w", bmc.ErrProtocol)
	type step struct {
		at      time.Duration
		err     error
		changed bool
		want    Health
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"healthy stays quiet", []step{{0, nil, false, Health{}}, {time.Minute, nil, false, Health{}}}},
		{"wrong credentials: one change, never asked again", []step{
			{0, auth, true, Health{Condition: BadCredentials, Since: at(0), Failures: 1}},
			{time.Hour, auth, false, Health{Condition: BadCredentials, Since: at(0), Failures: 2}},
		}},
		{"unreachable backs off, one change, recovery is a change", []step{
			{0, down, true, Health{Condition: Unreachable, Since: at(0), Failures: 1, Retry: at(time.Minute)}},
			{time.Minute, down, false, Health{Condition: Unreachable, Since: at(0), Failures: 2, Retry: at(3 * time.Minute)}},
			{3 * time.Minute, down, false, Health{Condition: Unreachable, Since: at(0), Failures: 3, Retry: at(7 * time.Minute)}},
			{7 * time.Minute, down, false, Health{Condition: Unreachable, Since: at(0), Failures: 4, Retry: at(11 * time.Minute)}},
			{11 * time.Minute, nil, true, Health{}},
		}},
		{"another kind of failure is a change and restarts the backoff", []step{
			{0, down, true, Health{Condition: Unreachable, Since: at(0), Failures: 1, Retry: at(time.Minute)}},
			{time.Minute, junk, true, Health{Condition: Garbage, Since: at(time.Minute), Failures: 1, Retry: at(2 * time.Minute)}},
			{2 * time.Minute, auth, true, Health{Condition: BadCredentials, Since: at(2 * time.Minute), Failures: 1}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var h Health
			for i, s := range tt.steps {
				var changed bool
				h, changed = Observe(h, s.err, at(s.at), b)
				if h != s.want || changed != s.changed {
					t.Fatalf("step %d: %+v changed=%v, want %+v changed=%v", i, h, changed, s.want, s.changed)
				}
			}
		})
	}
}

func TestMayAsk(t *testing.T) {
	for _, tt := range []struct {
		h    Health
		now  time.Time
		want bool
	}{
		{Health{}, at(0), true},
		{Health{Condition: BadCredentials, Since: at(0), Failures: 1}, at(1000 * time.Hour), false},
		{Health{Condition: Unreachable, Failures: 1, Retry: at(time.Minute)}, at(time.Minute - 1), false},
		{Health{Condition: Unreachable, Failures: 1, Retry: at(time.Minute)}, at(time.Minute), true},
	} {
		if got := tt.h.MayAsk(tt.now); got != tt.want {
			t.Errorf("%+v.MayAsk(%v) = %v, want %v", tt.h, tt.now, got, tt.want)
		}
	}
}

func TestNext(t *testing.T) {
	const d = 10 * time.Minute
	l := Limits{Deadline: d, Max: 3}
	type sweep struct {
		at        time.Duration
		lastSeen  time.Duration // <0: never
		crashLoop bool
		step      Step
		want      Cycle
	}
	seen := func(x time.Duration) time.Time {
		if x < 0 {
			return time.Time{}
		}
		return at(x)
	}
	noAgent := Cycle{Reason: NoAgent, Since: at(0)}
	for _, tt := range []struct {
		name   string
		start  Cycle
		limits Limits
		sweeps []sweep
	}{
		{"no agent: three power cycles with doubling waits, then one give-up", noAgent, l, []sweep{
			{d - time.Second, -1, false, Nothing, noAgent},
			{d, -1, false, PowerCycle, Cycle{NoAgent, at(d), 1, false}},
			{d + 2*d - time.Second, -1, false, Nothing, Cycle{NoAgent, at(d), 1, false}},
			{3 * d, -1, false, PowerCycle, Cycle{NoAgent, at(3 * d), 2, false}},
			{7*d - time.Second, -1, false, Nothing, Cycle{NoAgent, at(3 * d), 2, false}},
			{7 * d, -1, false, PowerCycle, Cycle{NoAgent, at(7 * d), 3, false}},
			{15*d - time.Second, -1, false, Nothing, Cycle{NoAgent, at(7 * d), 3, false}},
			{15 * d, -1, false, GiveUp, Cycle{NoAgent, at(7 * d), 3, true}},
			{100 * d, -1, false, Nothing, Cycle{NoAgent, at(7 * d), 3, true}},
		}},
		{"the agent shows up: the watch ends", noAgent, l, []sweep{
			{d, -1, false, PowerCycle, Cycle{NoAgent, at(d), 1, false}},
			{2 * d, 2 * d, false, Nothing, Cycle{}},
		}},
		{"seen before the reset does not count", noAgent, l, []sweep{
			{d, 0, false, PowerCycle, Cycle{NoAgent, at(d), 1, false}},
		}},
		{"crash loop: watched from the sweep that sees it, same bounds", Cycle{}, Limits{Deadline: d, Max: 1}, []sweep{
			{0, 0, true, Nothing, Cycle{CrashLoop, at(0), 0, false}},
			{d, d, true, PowerCycle, Cycle{CrashLoop, at(d), 1, false}},
			{3 * d, 3 * d, true, GiveUp, Cycle{CrashLoop, at(d), 1, true}},
			{9 * d, 9 * d, true, Nothing, Cycle{CrashLoop, at(d), 1, true}},
			{10 * d, 10 * d, false, Nothing, Cycle{}},
		}},
		{"nothing to watch", Cycle{}, l, []sweep{{0, -1, false, Nothing, Cycle{}}}},
		{"zero attempts: give up at the deadline", noAgent, Limits{Deadline: d}, []sweep{{d, -1, false, GiveUp, Cycle{NoAgent, at(0), 0, true}}}},
		{"recovery off", noAgent, Limits{Max: 3}, []sweep{{100 * d, -1, true, Nothing, Cycle{}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.start
			for i, s := range tt.sweeps {
				var step Step
				c, step = Next(c, Facts{Now: at(s.at), LastSeen: seen(s.lastSeen), CrashLoop: s.crashLoop}, tt.limits)
				if c != s.want || step != s.step {
					t.Fatalf("sweep %d at %v: %+v step %v, want %+v step %v", i, s.at, c, step, s.want, s.step)
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	if err := (Limits{Deadline: -1, Max: MaxCycles + 1}).Validate(); err == nil {
		t.Fatal("bad limits accepted")
	}
	if err := (Limits{Deadline: time.Minute, Max: 3}).Validate(); err != nil {
		t.Fatal(err)
	}
	if got := (Limits{Deadline: time.Minute}).Wait(1000); got != time.Minute<<MaxCycles {
		t.Errorf("Wait is not bounded: %v", got)
	}
}
