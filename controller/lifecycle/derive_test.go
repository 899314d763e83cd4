package lifecycle

import (
	"strings"
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestDeriveLiveliness(t *testing.T) {
	now := at(100)
	alive, unknown, dead := anvilv1.Liveliness_LIVELINESS_ALIVE, anvilv1.Liveliness_LIVELINESS_UNKNOWN, anvilv1.Liveliness_LIVELINESS_DEAD
	tests := []struct {
		name     string
		lastSeen time.Time
		cfg      Config
		want     anvilv1.Liveliness
	}{
		{"never seen", time.Time{}, DefaultConfig(), unknown},
		{"just now", now, DefaultConfig(), alive},
		{"in the future (clock skew)", now.Add(time.Minute), DefaultConfig(), alive},
		{"just under the alive timeout", now.Add(-2*time.Minute + time.Nanosecond), DefaultConfig(), alive},
		{"at the alive timeout", now.Add(-2 * time.Minute), DefaultConfig(), unknown},
		{"between", now.Add(-5 * time.Minute), DefaultConfig(), unknown},
		{"at the dead timeout", now.Add(-10 * time.Minute), DefaultConfig(), unknown},
		{"just over the dead timeout", now.Add(-10*time.Minute - time.Nanosecond), DefaultConfig(), dead},
		{"long gone", now.Add(-24 * time.Hour), DefaultConfig(), dead},
		{"custom alive timeout", now.Add(-5 * time.Minute), Config{AliveTimeout: 6 * time.Minute, DeadTimeout: time.Hour}, alive},
		{"custom dead timeout", now.Add(-5 * time.Minute), Config{AliveTimeout: time.Minute, DeadTimeout: 4 * time.Minute}, dead},
		{"zero config is the default", now.Add(-3 * time.Minute), Config{}, unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Derive(Status{State: stReady}, tt.lastSeen, now, tt.cfg).Liveliness; got != tt.want {
				t.Errorf("liveliness %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDeriveFailedReclaim(t *testing.T) {
	since := at(0)
	reclaimIn := func(st anvilv1.MachineState) Status {
		return Status{State: st, Reclaiming: true, ReclaimSince: since}
	}
	tests := []struct {
		name string
		s    Status
		now  time.Time
		cfg  Config
		want bool
	}{
		{"reclaim in time", reclaimIn(stReclaim), since.Add(30 * time.Minute), DefaultConfig(), false},
		{"reclaim overdue", reclaimIn(stReclaim), since.Add(30*time.Minute + time.Second), DefaultConfig(), true},
		{"erase overdue", reclaimIn(stWiping), since.Add(time.Hour), DefaultConfig(), true},
		{"stuck booting into the agent", reclaimIn(stPXEBooting), since.Add(time.Hour), DefaultConfig(), true},
		{"erase failed long ago", Status{State: stFailed, FailureReason: "erase", Reclaiming: true, ReclaimSince: since}, since.Add(time.Hour), DefaultConfig(), true},
		{"custom timeout", reclaimIn(stWiping), since.Add(10 * time.Minute), Config{ReclaimTimeout: 5 * time.Minute}, true},
		{"phoned home after reclaim", Status{State: stReclaim, Reclaiming: true, ReclaimSince: since, FailedReclaim: true}, since.Add(time.Minute), DefaultConfig(), true},
		{"ready is never a failed reclaim", Status{State: stReady}, since.Add(time.Hour), DefaultConfig(), false},
		{"wiping without a reclaim is not a reclaim", Status{State: stWiping}, since.Add(time.Hour), DefaultConfig(), false},
		{"reclaim without a time cannot time out", Status{State: stReclaim, Reclaiming: true}, since.Add(time.Hour), DefaultConfig(), false},
		{"fold: reclaimed, then erased", Fold(history(evAllocated, evReclaim, evWiping, evWiped), DefaultConfig()), at(100), DefaultConfig(), false},
		{"fold: reclaimed, erase never ends", Fold(history(evAllocated, evReclaim, evWiping), DefaultConfig()), at(100), DefaultConfig(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Derive(tt.s, tt.now, tt.now, tt.cfg).FailedReclaim; got != tt.want {
				t.Errorf("FailedReclaim %v, want %v (%+v)", got, tt.want, tt.s)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"default", DefaultConfig(), nil},
		{"zero", Config{}, []string{"crash loop cycles 0", "alive timeout 0s", "dead timeout 0s", "reclaim timeout 0s"}},
		{"dead before alive", Config{CrashLoopCycles: 1, AliveTimeout: time.Hour, DeadTimeout: time.Minute, ReclaimTimeout: time.Hour},
			[]string{"dead timeout 1m0s: must be longer than the alive timeout 1h0m0s"}},
		{"dead equal to alive", Config{CrashLoopCycles: 1, AliveTimeout: time.Minute, DeadTimeout: time.Minute, ReclaimTimeout: time.Hour},
			[]string{"dead timeout 1m0s"}},
		{"negative", Config{CrashLoopCycles: -1, AliveTimeout: -time.Second, DeadTimeout: time.Minute, ReclaimTimeout: -time.Minute},
			[]string{"crash loop cycles -1", "alive timeout -1s", "reclaim timeout -1m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("%d problems reported, want %d: %v", n, len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
