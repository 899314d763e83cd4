// Package app runs anvil-firewall: every update from a source (Kubernetes
// informers or a policies directory) is compiled into the ruleset model
// and applied in one nftables transaction, with metrics, clear errors for
// invalid policies and rate-limited logs of dropped traffic. Flags live in
// cmd/anvil-firewall; this package is the loop.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/metrics"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/firewall/watch"
)

// Applier programs a ruleset; *apply.Applier is one.
type Applier interface {
	Apply(model.Ruleset) (changed bool, err error)
	// PacketCounts returns packets per rule comment.
	PacketCounts() (map[string]uint64, error)
}

// Options configure Run.
type Options struct {
	Config  config.Config
	Source  watch.Source
	Applier Applier
	Metrics *metrics.Metrics // optional
	Logger  *slog.Logger     // optional
	// DropLogInterval is how often dropped-packet counters are checked
	// and, when they grew, logged (one line per policy, rate limited).
	// Zero disables it.
	DropLogInterval time.Duration
	// OnApplied, when set, is called after every reconcile (tests).
	OnApplied func(Result)
}

// Result is the outcome of one reconcile.
type Result struct {
	Ruleset  model.Ruleset
	Changed  bool
	Err      error   // the apply error; the kernel kept the last good ruleset
	Invalid  []error // invalid policies, each naming its object
	Duration time.Duration
}

// Run reconciles until ctx ends.
func Run(ctx context.Context, o Options) error {
	if err := o.Config.Validate(); err != nil {
		return fmt.Errorf("firewall configuration: %w", err)
	}
	if o.Source == nil || o.Applier == nil {
		return errors.New("app: a source and an applier are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &reconciler{o: o, log: log, reported: map[string]bool{}}
	if o.DropLogInterval > 0 && o.Metrics != nil {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); r.logDrops(ctx) }()
		defer wg.Wait()
	}
	err := o.Source.Run(ctx, r.update)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

type reconciler struct {
	o        Options
	log      *slog.Logger
	reported map[string]bool // errors already logged, so a resync does not repeat them
}

// Reconcile compiles and applies one snapshot. It is exported through
// Once for --dry-run and tests.
func (r *reconciler) update(u watch.Update) {
	start := time.Now()
	rs, invalid := compile.Compile(u.Snapshot, r.o.Config)
	r.reportErrors(append(append([]error(nil), u.Errors...), invalid...))
	var pending metrics.Pending
	if m := r.o.Metrics; m != nil {
		var err error
		if pending, err = m.Pending(); err != nil {
			r.log.Warn("reading counters before the swap", "err", err)
		}
	}
	changed, err := r.o.Applier.Apply(rs)
	if m := r.o.Metrics; m != nil && changed && err == nil {
		m.Fold(pending) // only a committed swap resets the counters
	}
	d := time.Since(start)
	if err != nil {
		r.log.Error("applying the ruleset failed; the kernel keeps the last good one", "err", err, "policies", len(u.Snapshot.Policies))
	} else if changed {
		r.log.Info("ruleset applied", "policies", len(u.Snapshot.Policies), "pods", len(u.Snapshot.Pods),
			"sets", len(rs.Sets), "chains", len(rs.Chains), "invalid", len(invalid), "took", d)
	}
	if m := r.o.Metrics; m != nil {
		m.Result(d, changed, err, len(invalid), time.Now())
		if err == nil {
			m.SetCounters(rs.Owners, r.o.Applier.PacketCounts)
		}
	}
	if r.o.OnApplied != nil {
		r.o.OnApplied(Result{Ruleset: rs, Changed: changed, Err: err, Invalid: invalid, Duration: d})
	}
}

// reportErrors logs each new error once (and again once it was fixed and
// came back).
func (r *reconciler) reportErrors(errs []error) {
	now := map[string]bool{}
	for _, e := range errs {
		msg := e.Error()
		now[msg] = true
		if !r.reported[msg] {
			r.log.Error("ignoring invalid input; the rest applies", "err", strings.ReplaceAll(msg, "\n", "; "))
		}
	}
	r.reported = now
}

// logDrops logs, per policy, how many packets were dropped since the last
// check, at most a few lines per second.
func (r *reconciler) logDrops(ctx context.Context) {
	t := time.NewTicker(r.o.DropLogInterval)
	defer t.Stop()
	lim := rate.NewLimiter(rate.Limit(5), 20)
	last := map[string]uint64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		perPolicy, other, err := r.o.Metrics.Totals()
		if err != nil {
			continue
		}
		cur := map[string]uint64{}
		for ref, v := range perPolicy {
			cur["policy "+ref.String()] = v[1]
		}
		for rule, v := range other {
			cur[rule] = v[1]
		}
		keys := make([]string, 0, len(cur))
		for k := range cur {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		suppressed := 0
		for _, k := range keys {
			delta := cur[k] - last[k]
			if cur[k] < last[k] || delta == 0 {
				continue
			}
			if !lim.Allow() {
				suppressed++
				continue
			}
			r.log.Warn("dropped packets", "by", k, "packets", delta, "interval", r.o.DropLogInterval)
		}
		if suppressed > 0 {
			r.log.Warn("drop log rate limited", "suppressed_lines", suppressed)
		}
		last = cur
	}
}

// Once compiles and applies one snapshot outside Run (tests, --once).
func Once(o Options, s cluster.Snapshot) Result {
	var res Result
	prev := o.OnApplied
	o.OnApplied = func(r Result) {
		res = r
		if prev != nil {
			prev(r)
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	(&reconciler{o: o, log: log, reported: map[string]bool{}}).update(watch.Update{Snapshot: s})
	return res
}
