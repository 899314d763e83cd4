package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/anvil-metal/anvil/firewall/cluster"
)

// Kube follows a Kubernetes API server. It lists and watches
// NetworkPolicies, Pods, Namespaces and Services with client-go shared
// informers (which re-list and re-watch by themselves after a watch breaks)
// and, after any change, waits Options.Debounce for more changes, then
// reads the whole state from the informers' caches and notifies. It never
// notifies before all four caches have synced: an empty snapshot would
// lift all isolation.
type Kube struct {
	client kubernetes.Interface
	opts   Options
}

// NewKube returns a Source following the API server client talks to.
func NewKube(client kubernetes.Interface, opts Options) *Kube {
	return &Kube{client: client, opts: opts.withDefaults()}
}

// syncPoll is how often Run checks whether the caches have synced.
const syncPoll = 10 * time.Millisecond

// syncWarn is how often Run logs which caches are still not synced.
const syncWarn = 10 * time.Second

// Run lists and watches until ctx ends; see Source.
func (k *Kube) Run(ctx context.Context, notify func(Update)) error {
	log := k.opts.Logger
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTransform(strip))
	// Informers stop when ctx ends; Shutdown waits for their goroutines.
	defer factory.Shutdown()
	defer cancel()

	policies := factory.Networking().V1().NetworkPolicies()
	pods := factory.Core().V1().Pods()
	namespaces := factory.Core().V1().Namespaces()
	services := factory.Core().V1().Services()

	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(oldObj, newObj any) {
			// A re-list replays unchanged objects as updates.
			o, ok1 := oldObj.(metav1.Object)
			n, ok2 := newObj.(metav1.Object)
			if ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion() && o.GetResourceVersion() != "" {
				return
			}
			poke()
		},
		DeleteFunc: func(any) { poke() },
	}
	type named struct {
		name string
		inf  cache.SharedIndexInformer
		reg  cache.ResourceEventHandlerRegistration
	}
	infs := []named{
		{name: "networkpolicies", inf: policies.Informer()},
		{name: "pods", inf: pods.Informer()},
		{name: "namespaces", inf: namespaces.Informer()},
		{name: "services", inf: services.Informer()},
	}
	for i := range infs {
		n := &infs[i]
		reg, err := n.inf.AddEventHandler(handler)
		if err != nil {
			return fmt.Errorf("watch %s: add event handler: %w", n.name, err)
		}
		n.reg = reg
		if err := n.inf.SetWatchErrorHandlerWithContext(watchErrorHandler(log, n.name)); err != nil {
			return fmt.Errorf("watch %s: set watch error handler: %w", n.name, err)
		}
	}

	start := time.Now()
	factory.StartWithContext(ctx)
	tick := time.NewTicker(syncPoll)
	defer tick.Stop()
	lastWarn := start
	for {
		var pending []string
		for _, n := range infs {
			// The registration has synced once the handler has seen
			// every object of the initial list: the first read covers
			// them, so they cause no second notify.
			if !n.reg.HasSynced() {
				pending = append(pending, n.name)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Since(lastWarn) >= syncWarn {
			log.Warn("still waiting for the Kubernetes API: no firewall update until every cache has synced",
				"pending", strings.Join(pending, ","), "waited", time.Since(start).Round(time.Second))
			lastWarn = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	tick.Stop()

	read := func() Update {
		var s cluster.Snapshot
		var errs []error
		if l, err := policies.Lister().List(labels.Everything()); err != nil {
			errs = append(errs, fmt.Errorf("list networkpolicies from the cache: %w", err))
		} else {
			s.Policies = make([]networkingv1.NetworkPolicy, 0, len(l))
			for _, o := range l {
				s.Policies = append(s.Policies, *o)
			}
		}
		if l, err := pods.Lister().List(labels.Everything()); err != nil {
			errs = append(errs, fmt.Errorf("list pods from the cache: %w", err))
		} else {
			s.Pods = make([]corev1.Pod, 0, len(l))
			for _, o := range l {
				s.Pods = append(s.Pods, *o)
			}
		}
		if l, err := namespaces.Lister().List(labels.Everything()); err != nil {
			errs = append(errs, fmt.Errorf("list namespaces from the cache: %w", err))
		} else {
			s.Namespaces = make([]corev1.Namespace, 0, len(l))
			for _, o := range l {
				s.Namespaces = append(s.Namespaces, *o)
			}
		}
		if l, err := services.Lister().List(labels.Everything()); err != nil {
			errs = append(errs, fmt.Errorf("list services from the cache: %w", err))
		} else {
			s.Services = make([]corev1.Service, 0, len(l))
			for _, o := range l {
				s.Services = append(s.Services, *o)
			}
		}
		sortSnapshot(&s)
		return Update{Snapshot: s, Errors: errs}
	}

	d := debouncer{debounce: k.opts.Debounce, maxDelay: k.opts.MaxDelay, resync: k.opts.Resync}
	first := true
	return d.run(ctx, changed, func(reason string) {
		u := read()
		if first {
			log.Info("kubernetes caches synced", "took", time.Since(start).Round(time.Millisecond),
				"policies", len(u.Snapshot.Policies), "pods", len(u.Snapshot.Pods),
				"namespaces", len(u.Snapshot.Namespaces), "services", len(u.Snapshot.Services))
			first = false
		} else {
			log.Debug("kubernetes state read", "reason", reason, "policies", len(u.Snapshot.Policies),
				"pods", len(u.Snapshot.Pods), "namespaces", len(u.Snapshot.Namespaces), "services", len(u.Snapshot.Services))
		}
		notify(u)
	})
}

// debouncer turns change signals into reconciles: the first one right away
// (initial), then one Debounce after the last change of a burst but never
// later than MaxDelay after its first change, and one every Resync without
// changes.
type debouncer struct {
	debounce, maxDelay, resync time.Duration
}

// run calls reconcile once at once, then as described on debouncer, until
// ctx ends; it returns ctx.Err(). A change signalled while reconcile runs
// causes another reconcile.
func (d debouncer) run(ctx context.Context, changed <-chan struct{}, reconcile func(reason string)) error {
	// Signals that arrived before the first read are covered by it.
	select {
	case <-changed:
	default:
	}
	reconcile("initial")

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var resyncC <-chan time.Time
	var resync *time.Timer
	if d.resync > 0 {
		resync = time.NewTimer(d.resync)
		defer resync.Stop()
		resyncC = resync.C
	}
	defer timer.Stop()
	pending := false
	var firstChange time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			now := time.Now()
			if !pending {
				pending, firstChange = true, now
			}
			deadline := now.Add(d.debounce)
			if limit := firstChange.Add(d.maxDelay); deadline.After(limit) {
				deadline = limit
			}
			timer.Reset(time.Until(deadline))
			continue
		case <-timer.C:
			pending = false
			reconcile("change")
		case <-resyncC:
			if pending {
				// The pending reconcile is the resync.
				resync.Reset(d.resync)
				continue
			}
			reconcile("resync")
		}
		if resync != nil {
			resync.Reset(d.resync)
		}
	}
}

// watchErrorHandler logs a broken watch; the reflector re-watches or
// re-lists by itself.
func watchErrorHandler(log *slog.Logger, resource string) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		switch {
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			log.Debug("kubernetes watch closed; re-listing", "resource", resource, "err", err)
		default:
			log.Warn("kubernetes list/watch failed; retrying (the firewall keeps the last state)", "resource", resource, "err", err)
		}
	}
}

// strip is the informers' transform: it drops what the firewall never
// reads before an object enters the cache (managedFields and the
// last-applied annotation everywhere; of a Pod's spec and status all but
// hostNetwork, nodeName, the containers' names and ports, phase and pod
// IPs). Idempotent; tombstones pass unchanged.
func strip(obj any) (any, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil
	}
	m.SetManagedFields(nil)
	if a := m.GetAnnotations(); a != nil {
		if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
			delete(a, corev1.LastAppliedConfigAnnotation)
			if len(a) == 0 {
				m.SetAnnotations(nil)
			}
		}
	}
	if p, ok := obj.(*corev1.Pod); ok {
		trimPod(p)
	}
	return obj, nil
}

func trimPod(p *corev1.Pod) {
	keep := func(cs []corev1.Container) []corev1.Container {
		if len(cs) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
		}
		return out
	}
	p.Spec = corev1.PodSpec{
		HostNetwork:    p.Spec.HostNetwork,
		NodeName:       p.Spec.NodeName,
		Containers:     keep(p.Spec.Containers),
		InitContainers: keep(p.Spec.InitContainers),
	}
	p.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs}
}
