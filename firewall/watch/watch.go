// Package watch provides anvil-firewall's sources of cluster state: Kube
// follows a Kubernetes API server with client-go shared informers for
// NetworkPolicies (networking.k8s.io/v1), Pods, Namespaces and Services
// (core/v1), and Dir reads the same objects from YAML or JSON manifests in
// a directory. Both are level-triggered: every Update carries the whole
// state (a cluster.Snapshot), never a delta, so a consumer that compiles
// and applies each one converges whatever it missed.
package watch

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/anvil-metal/anvil/firewall/cluster"
)

// Update is the whole state of the cluster at one moment.
type Update struct {
	Snapshot cluster.Snapshot
	// Errors are the objects or files that could not be read, each error
	// naming its object or file. What could be read is in Snapshot (for
	// Dir, with the last good version of a file that became unreadable).
	Errors []error
}

// Source produces Updates.
type Source interface {
	// Run calls notify with the whole state, first once the state is
	// known and then whenever it changed, until ctx ends; it then returns
	// ctx.Err(). It returns early only when it cannot start. notify is
	// called from one goroutine, never concurrently, and Run waits for it
	// to return before it produces the next Update.
	Run(ctx context.Context, notify func(Update)) error
}

var (
	_ Source = (*Kube)(nil)
	_ Source = (*Dir)(nil)
)

// Defaults used for zero Options fields.
const (
	DefaultDebounce = 100 * time.Millisecond
	DefaultPoll     = time.Second
	// maxDelayFactor bounds debouncing: under a continuous stream of
	// changes a reconcile still happens every MaxDelay.
	maxDelayFactor = 4
)

// Options configure a Source.
type Options struct {
	// Debounce is how long Kube waits after a change for more changes
	// before it reads the state and notifies: a burst of changes gives one
	// Update. Zero means DefaultDebounce; negative means no wait.
	Debounce time.Duration
	// MaxDelay caps how long a change can wait while changes keep coming:
	// a reconcile happens at most MaxDelay after the first change it
	// covers. Zero means 4 × Debounce.
	MaxDelay time.Duration
	// Resync, when positive, makes the source notify at least that often
	// even without changes (the consumer re-applies, repairing drift).
	Resync time.Duration
	// Poll is how often Dir reads its directory. Zero means DefaultPoll.
	Poll time.Duration
	// Logger receives progress and watch errors; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Debounce == 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Debounce < 0 {
		o.Debounce = 0
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = maxDelayFactor * o.Debounce
	}
	if o.MaxDelay < o.Debounce {
		o.MaxDelay = o.Debounce
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// sortSnapshot orders every list by namespace and name, so equal states
// give equal snapshots.
func sortSnapshot(s *cluster.Snapshot) {
	sort.Slice(s.Policies, func(i, j int) bool {
		return less(s.Policies[i].Namespace, s.Policies[i].Name, s.Policies[j].Namespace, s.Policies[j].Name)
	})
	sort.Slice(s.Pods, func(i, j int) bool {
		return less(s.Pods[i].Namespace, s.Pods[i].Name, s.Pods[j].Namespace, s.Pods[j].Name)
	})
	sort.Slice(s.Namespaces, func(i, j int) bool { return s.Namespaces[i].Name < s.Namespaces[j].Name })
	sort.Slice(s.Services, func(i, j int) bool {
		return less(s.Services[i].Namespace, s.Services[i].Name, s.Services[j].Namespace, s.Services[j].Name)
	})
}

func less(ns1, n1, ns2, n2 string) bool {
	if ns1 != ns2 {
		return ns1 < ns2
	}
	return n1 < n2
}
