package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/anvil-metal/anvil/firewall/cluster"
)

// recorder collects the Updates of a running Source.
type recorder struct {
	mu      sync.Mutex
	updates []Update
	times   []time.Time
	signal  chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) notify(u Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.times = append(r.times, time.Now())
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

func (r *recorder) last() (Update, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return Update{}, 0
	}
	return r.updates[len(r.updates)-1], len(r.updates)
}

// waitFor waits until the latest Update satisfies cond and returns it.
func (r *recorder) waitFor(t *testing.T, what string, timeout time.Duration, cond func(Update) bool) Update {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if u, n := r.last(); n > 0 && cond(u) {
			return u
		}
		select {
		case <-r.signal:
		case <-deadline:
			u, n := r.last()
			t.Fatalf("%s: not reached within %v after %d updates; last snapshot: %s", what, timeout, n, describe(u.Snapshot))
		}
	}
}

// run starts src and stops it (checking it returns ctx.Err()) at cleanup.
func run(t *testing.T, src Source, r *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, r.notify) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// describe names every object of a snapshot, sorted.
func describe(s cluster.Snapshot) string {
	var out []string
	for _, p := range s.Policies {
		out = append(out, "policy "+p.Namespace+"/"+p.Name)
	}
	for _, p := range s.Pods {
		out = append(out, fmt.Sprintf("pod %s/%s%v%v", p.Namespace, p.Name, p.Labels, p.Status.PodIPs))
	}
	for _, n := range s.Namespaces {
		out = append(out, fmt.Sprintf("ns %s%v", n.Name, n.Labels))
	}
	for _, v := range s.Services {
		out = append(out, "svc "+v.Namespace+"/"+v.Name)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func names(s cluster.Snapshot) map[string]bool {
	m := map[string]bool{}
	for _, p := range s.Policies {
		m["policy "+p.Namespace+"/"+p.Name] = true
	}
	for _, p := range s.Pods {
		m["pod "+p.Namespace+"/"+p.Name] = true
	}
	for _, n := range s.Namespaces {
		m["ns "+n.Name] = true
	}
	for _, v := range s.Services {
		m["svc "+v.Namespace+"/"+v.Name] = true
	}
	return m
}

func hasAll(s cluster.Snapshot, want ...string) bool {
	m := names(s)
	for _, w := range want {
		if !m[w] {
			return false
		}
	}
	return true
}

func hasNone(s cluster.Snapshot, unwanted ...string) bool {
	m := names(s)
	for _, w := range unwanted {
		if m[w] {
			return false
		}
	}
	return true
}

func mkNS(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func mkPod(ns, name string, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "img", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func mkPolicy(ns, name string, sel map[string]string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}},
	}
}

func mkSvc(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 443}}},
	}
}

func initialObjects() []runtime.Object {
	return []runtime.Object{
		mkNS("a", map[string]string{"team": "a"}),
		mkNS("b", nil),
		mkPod("a", "web", map[string]string{"app": "web"}, "10.0.0.1", "fd00::1"),
		mkPod("a", "db", map[string]string{"app": "db"}, "10.0.0.2"),
		mkPod("b", "client", nil, "10.0.1.1"),
		mkPolicy("a", "deny-all", nil),
		mkPolicy("a", "web", map[string]string{"app": "web"}),
		mkSvc("a", "lb"),
	}
}

var initialNames = []string{"ns a", "ns b", "pod a/web", "pod a/db", "pod b/client", "policy a/deny-all", "policy a/web", "svc a/lb"}

func TestKubeInitialSync(t *testing.T) {
	client := fake.NewClientset(initialObjects()...)
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 30 * time.Millisecond, Logger: testLogger(t)}), r)
	u := r.waitFor(t, "initial snapshot", 5*time.Second, func(Update) bool { return true })
	if got, want := len(names(u.Snapshot)), len(initialNames); got != want || !hasAll(u.Snapshot, initialNames...) {
		t.Fatalf("initial snapshot = %s; want exactly %v", describe(u.Snapshot), initialNames)
	}
	if len(u.Errors) != 0 {
		t.Errorf("errors: %v", u.Errors)
	}
	// Sorted by namespace and name.
	if u.Snapshot.Pods[0].Name != "db" || u.Snapshot.Pods[1].Name != "web" || u.Snapshot.Pods[2].Name != "client" {
		t.Errorf("pods not sorted: %s", describe(u.Snapshot))
	}
	// The initial list's events are covered by the first read: no second
	// notify without a change.
	time.Sleep(300 * time.Millisecond)
	if n := r.count(); n != 1 {
		t.Errorf("%d notifies without any change after the initial sync, want 1", n)
	}
}

// TestKubeStrip checks the informer transform: what the firewall reads
// survives, the rest is gone.
func TestKubeStrip(t *testing.T) {
	p := mkPod("a", "web", map[string]string{"app": "web"}, "10.0.0.1", "fd00::1")
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	p.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: strings.Repeat("x", 1000), "keep": "me"}
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "BIG", Value: strings.Repeat("y", 1000)}}
	p.Spec.Containers[0].Command = []string{"/bin/server"}
	p.Spec.Volumes = []corev1.Volume{{Name: "v"}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	np := mkPolicy("a", "p", nil)
	np.ManagedFields = p.ManagedFields
	client := fake.NewClientset(p, np, mkNS("a", nil))
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 10 * time.Millisecond, Logger: testLogger(t)}), r)
	u := r.waitFor(t, "initial snapshot", 5*time.Second, func(Update) bool { return true })
	if len(u.Snapshot.Pods) != 1 || len(u.Snapshot.Policies) != 1 {
		t.Fatalf("snapshot = %s", describe(u.Snapshot))
	}
	got := u.Snapshot.Pods[0]
	if got.ManagedFields != nil || u.Snapshot.Policies[0].ManagedFields != nil {
		t.Errorf("managedFields kept")
	}
	if _, ok := got.Annotations[corev1.LastAppliedConfigAnnotation]; ok || got.Annotations["keep"] != "me" {
		t.Errorf("annotations = %v, want only keep=me", got.Annotations)
	}
	c := got.Spec.Containers
	if len(c) != 1 || c[0].Name != "c" || len(c[0].Ports) != 1 || c[0].Ports[0].Name != "http" || c[0].Env != nil || c[0].Command != nil || c[0].Image != "" {
		t.Errorf("container = %+v, want name and ports only", c)
	}
	if got.Spec.Volumes != nil || got.Status.Conditions != nil {
		t.Errorf("volumes/conditions kept")
	}
	if got.Labels["app"] != "web" || got.Status.Phase != corev1.PodRunning || len(got.Status.PodIPs) != 2 || got.Status.PodIP != "10.0.0.1" {
		t.Errorf("pod lost fields the firewall reads: %+v", got)
	}
	if ps := cluster.Pods(u.Snapshot); len(ps) != 1 || len(ps[0].IPs) != 2 || len(ps[0].Ports) != 1 {
		t.Errorf("cluster.Pods of the stripped pod = %+v", ps)
	}
}

func TestKubeChanges(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(initialObjects()...)
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 20 * time.Millisecond, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial snapshot", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, initialNames...) })
	const timeout = 5 * time.Second
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// NetworkPolicy: add, update, delete.
	_, err := client.NetworkingV1().NetworkPolicies("b").Create(ctx, mkPolicy("b", "new", nil), metav1.CreateOptions{})
	must(err)
	r.waitFor(t, "policy added", timeout, func(u Update) bool { return hasAll(u.Snapshot, "policy b/new") })
	np := mkPolicy("b", "new", map[string]string{"x": "y"})
	_, err = client.NetworkingV1().NetworkPolicies("b").Update(ctx, np, metav1.UpdateOptions{})
	must(err)
	r.waitFor(t, "policy updated", timeout, func(u Update) bool {
		for _, p := range u.Snapshot.Policies {
			if p.Name == "new" && p.Spec.PodSelector.MatchLabels["x"] == "y" {
				return true
			}
		}
		return false
	})
	must(client.NetworkingV1().NetworkPolicies("a").Delete(ctx, "web", metav1.DeleteOptions{}))
	r.waitFor(t, "policy deleted", timeout, func(u Update) bool { return hasNone(u.Snapshot, "policy a/web") })

	// Pod: add, relabel, new IPs (status), delete.
	_, err = client.CoreV1().Pods("b").Create(ctx, mkPod("b", "p2", nil, "10.0.1.2"), metav1.CreateOptions{})
	must(err)
	r.waitFor(t, "pod added", timeout, func(u Update) bool { return hasAll(u.Snapshot, "pod b/p2") })
	p := mkPod("b", "p2", map[string]string{"role": "x"}, "10.0.1.2")
	_, err = client.CoreV1().Pods("b").Update(ctx, p, metav1.UpdateOptions{})
	must(err)
	podHas := func(name string, f func(corev1.Pod) bool) func(Update) bool {
		return func(u Update) bool {
			for _, p := range u.Snapshot.Pods {
				if p.Namespace+"/"+p.Name == name {
					return f(p)
				}
			}
			return false
		}
	}
	r.waitFor(t, "pod relabelled", timeout, podHas("b/p2", func(p corev1.Pod) bool { return p.Labels["role"] == "x" }))
	p = mkPod("b", "p2", map[string]string{"role": "x"}, "10.0.1.99", "fd00::99")
	_, err = client.CoreV1().Pods("b").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	must(err)
	r.waitFor(t, "pod IPs changed", timeout, podHas("b/p2", func(p corev1.Pod) bool {
		return len(p.Status.PodIPs) == 2 && p.Status.PodIPs[0].IP == "10.0.1.99" && p.Status.PodIPs[1].IP == "fd00::99"
	}))
	must(client.CoreV1().Pods("a").Delete(ctx, "db", metav1.DeleteOptions{}))
	r.waitFor(t, "pod deleted", timeout, func(u Update) bool { return hasNone(u.Snapshot, "pod a/db") })

	// Namespace: add, relabel, delete.
	_, err = client.CoreV1().Namespaces().Create(ctx, mkNS("c", nil), metav1.CreateOptions{})
	must(err)
	r.waitFor(t, "namespace added", timeout, func(u Update) bool { return hasAll(u.Snapshot, "ns c") })
	_, err = client.CoreV1().Namespaces().Update(ctx, mkNS("c", map[string]string{"env": "prod"}), metav1.UpdateOptions{})
	must(err)
	r.waitFor(t, "namespace relabelled", timeout, func(u Update) bool {
		for _, n := range u.Snapshot.Namespaces {
			if n.Name == "c" {
				return n.Labels["env"] == "prod"
			}
		}
		return false
	})
	must(client.CoreV1().Namespaces().Delete(ctx, "b", metav1.DeleteOptions{}))
	r.waitFor(t, "namespace deleted", timeout, func(u Update) bool { return hasNone(u.Snapshot, "ns b") })

	// Service: add, update (load balancer IP), delete.
	_, err = client.CoreV1().Services("c").Create(ctx, mkSvc("c", "s"), metav1.CreateOptions{})
	must(err)
	r.waitFor(t, "service added", timeout, func(u Update) bool { return hasAll(u.Snapshot, "svc c/s") })
	svc := mkSvc("c", "s")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}
	_, err = client.CoreV1().Services("c").UpdateStatus(ctx, svc, metav1.UpdateOptions{})
	must(err)
	r.waitFor(t, "service status updated", timeout, func(u Update) bool {
		for _, s := range u.Snapshot.Services {
			if s.Name == "s" {
				return len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].IP == "192.0.2.10"
			}
		}
		return false
	})
	must(client.CoreV1().Services("a").Delete(ctx, "lb", metav1.DeleteOptions{}))
	r.waitFor(t, "service deleted", timeout, func(u Update) bool { return hasNone(u.Snapshot, "svc a/lb") })
}

func TestKubeBurstIsCoalesced(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(initialObjects()...)
	r := newRecorder()
	const debounce = 100 * time.Millisecond
	run(t, NewKube(client, Options{Debounce: debounce, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial snapshot", 5*time.Second, func(Update) bool { return true })
	start := time.Now()
	// 100 changes: 60 creates, 20 relabels, 20 deletes.
	for i := range 60 {
		if _, err := client.CoreV1().Pods("b").Create(ctx, mkPod("b", fmt.Sprintf("p%d", i), nil, fmt.Sprintf("10.1.0.%d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if _, err := client.CoreV1().Pods("b").Update(ctx, mkPod("b", fmt.Sprintf("p%d", i), map[string]string{"v": "2"}, fmt.Sprintf("10.1.0.%d", i)), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 40; i < 60; i++ {
		if err := client.CoreV1().Pods("b").Delete(ctx, fmt.Sprintf("p%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	burst := time.Since(start)
	final := func(u Update) bool {
		n, relabelled := 0, 0
		for _, p := range u.Snapshot.Pods {
			if p.Namespace == "b" && strings.HasPrefix(p.Name, "p") {
				n++
				if p.Labels["v"] == "2" {
					relabelled++
				}
			}
		}
		return n == 40 && relabelled == 20
	}
	r.waitFor(t, "final state of the burst", 5*time.Second, final)
	time.Sleep(3 * debounce) // nothing more may come
	u, n := r.last()
	if !final(u) {
		t.Fatalf("last update is not the final state: %s", describe(u.Snapshot))
	}
	notifies := n - 1
	// One notify per MaxDelay (4 × debounce) of the burst, plus the last.
	limit := int(burst/(4*debounce)) + 2
	t.Logf("100 changes in %v gave %d notifies (limit %d)", burst, notifies, limit)
	if notifies > limit || notifies > 20 {
		t.Errorf("100 changes in %v gave %d notifies, want at most %d", burst, notifies, min(limit, 20))
	}
}

// TestKubeMaxDelay checks that a continuous stream of changes does not
// starve reconciles.
func TestKubeMaxDelay(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(initialObjects()...)
	r := newRecorder()
	const debounce, maxDelay = 100 * time.Millisecond, 300 * time.Millisecond
	run(t, NewKube(client, Options{Debounce: debounce, MaxDelay: maxDelay, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial snapshot", 5*time.Second, func(Update) bool { return true })
	start := time.Now()
	for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
		if _, err := client.CoreV1().Pods("b").Create(ctx, mkPod("b", fmt.Sprintf("s%d", i), nil, "10.2.0.1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(debounce / 5)
	}
	during := r.count() - 1
	// ~1.5 s / 300 ms = 5 expected; a debounce that restarts on every
	// change would give 0.
	t.Logf("%d notifies during a 1.5 s stream of changes every %v", during, debounce/5)
	if during < 3 {
		t.Errorf("%d notifies during a 1.5 s stream of changes, want >= 3 (max delay %v)", during, maxDelay)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 2; i < len(r.times); i++ {
		if gap := r.times[i].Sub(r.times[i-1]); gap > maxDelay+200*time.Millisecond {
			t.Errorf("gap of %v between notifies %d and %d while changes kept coming", gap, i-1, i)
		}
	}
}

func TestKubeResync(t *testing.T) {
	client := fake.NewClientset(initialObjects()...)
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 10 * time.Millisecond, Resync: 150 * time.Millisecond, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial snapshot", 5*time.Second, func(Update) bool { return true })
	time.Sleep(700 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.updates); n < 4 || n > 6 {
		t.Errorf("%d notifies in 700 ms with resync 150 ms and no changes, want 4..6", n)
	}
	for i, u := range r.updates {
		if !hasAll(u.Snapshot, initialNames...) || len(names(u.Snapshot)) != len(initialNames) {
			t.Errorf("resync %d: snapshot %s", i, describe(u.Snapshot))
		}
	}
}

// TestKubeNoNotifyBeforeSync delays the pods list: until it completes,
// nothing may be notified (an empty snapshot would lift isolation).
func TestKubeNoNotifyBeforeSync(t *testing.T) {
	client := fake.NewClientset(initialObjects()...)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release
		return false, nil, nil // on to the object tracker
	})
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 10 * time.Millisecond, Logger: testLogger(t)}), r)
	t.Cleanup(open) // runs before Run's cleanup: the reflector must not stay blocked
	time.Sleep(500 * time.Millisecond)
	if n := r.count(); n != 0 {
		u, _ := r.last()
		t.Fatalf("%d notifies before the pods cache synced; last %s", n, describe(u.Snapshot))
	}
	open()
	u := r.waitFor(t, "snapshot after the pods list", 5*time.Second, func(Update) bool { return true })
	if !hasAll(u.Snapshot, initialNames...) {
		t.Errorf("first snapshot = %s, want all of %v", describe(u.Snapshot), initialNames)
	}
}

// TestKubeReconnect breaks the pods watch while pods change: the first
// watch delivers nothing and then expires (410), the next watch fails (API
// server down); the reflector must re-list and the snapshot converge.
func TestKubeReconnect(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(initialObjects()...)
	var mu sync.Mutex
	calls := 0
	first := kwatch.NewFake()
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, kwatch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 1:
			return true, first, nil
		case 2:
			return true, nil, errors.New("simulated: API server restarting")
		}
		return false, nil, nil // on to the object tracker
	})
	r := newRecorder()
	run(t, NewKube(client, Options{Debounce: 20 * time.Millisecond, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial snapshot", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, initialNames...) })

	// Changes the broken watch does not deliver.
	if _, err := client.CoreV1().Pods("b").Create(ctx, mkPod("b", "unseen", nil, "10.0.1.5"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Pods("a").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("a").Update(ctx, mkPod("a", "web", map[string]string{"app": "web2"}, "10.0.0.1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if u, _ := r.last(); !hasNone(u.Snapshot, "pod b/unseen") {
		t.Fatalf("the broken watch delivered a change: test is not testing the re-list")
	}
	start := time.Now()
	first.Error(&metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
	first.Stop()
	converged := func(u Update) bool {
		if !hasAll(u.Snapshot, "pod b/unseen") || !hasNone(u.Snapshot, "pod a/db") {
			return false
		}
		for _, p := range u.Snapshot.Pods {
			if p.Name == "web" {
				return p.Labels["app"] == "web2"
			}
		}
		return false
	}
	r.waitFor(t, "state after re-list", 15*time.Second, converged)
	t.Logf("converged %v after the watch expired", time.Since(start).Round(time.Millisecond))

	// And the watch works again afterwards.
	if _, err := client.CoreV1().Pods("b").Create(ctx, mkPod("b", "after", nil, "10.0.1.6"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "change after the reconnect", 15*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "pod b/after") })
	mu.Lock()
	defer mu.Unlock()
	if calls < 3 {
		t.Errorf("pods watch called %d times, want >= 3", calls)
	}
}

func TestDebouncerZero(t *testing.T) {
	// A negative Debounce reconciles right after each change.
	o := Options{Debounce: -1}.withDefaults()
	if o.Debounce != 0 || o.MaxDelay != 0 {
		t.Fatalf("withDefaults(Debounce: -1) = %+v", o)
	}
	o = Options{}.withDefaults()
	if o.Debounce != DefaultDebounce || o.MaxDelay != 4*DefaultDebounce || o.Poll != DefaultPoll || o.Logger == nil {
		t.Fatalf("withDefaults() = %+v", o)
	}
	changed := make(chan struct{}, 1)
	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- debouncer{}.run(ctx, changed, func(reason string) { got <- reason })
	}()
	if r := <-got; r != "initial" {
		t.Fatalf("first reconcile %q", r)
	}
	changed <- struct{}{}
	select {
	case r := <-got:
		if r != "change" {
			t.Fatalf("reconcile %q", r)
		}
	case <-time.After(time.Second):
		t.Fatal("no reconcile after a change")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run = %v", err)
	}
}
