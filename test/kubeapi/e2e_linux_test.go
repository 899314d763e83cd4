//go:build linux

package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/firewall/watch"
	fwtest "github.com/anvil-metal/anvil/test/firewall"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// followLimit is how soon the kernel's ruleset must follow an API change.
const followLimit = time.Second

// TestEndToEnd drives anvil-firewall's pipeline (watch.Kube → compile →
// apply) from a real kube-apiserver into the fw namespace of a test
// topology (test/firewall), and after each API change checks that the
// nftables table in the kernel follows within followLimit and that real
// connections from outside to the pods are passed or dropped accordingly.
func TestEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft(8) not found: %v", err)
	}
	srv := Start(t)
	t.Logf("kube-apiserver %s ready in %v", Version, srv.Started.Round(time.Millisecond))
	topo, err := fwtest.New()
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close topology: %v", err)
		}
	})
	plan := topo.Plan
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	// The pipeline, as anvil-firewall runs it, with the kubeconfig.
	cfg := config.Defaults()
	cfg.ClusterInterfaces = []string{fwtest.ClusterIf}
	rc, err := watch.RESTConfig(srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	applier, err := apply.New(apply.WithNetNS(topo.FW.Fd()), apply.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := applier.Close(); err != nil {
			t.Errorf("close applier: %v", err)
		}
	})
	var mu sync.Mutex
	var applied []time.Time // when Apply committed a batch
	src := watch.NewKube(client, watch.Options{Debounce: cfg.Debounce, Resync: cfg.Resync, Logger: log})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(runCtx, func(u watch.Update) {
			for _, e := range u.Errors {
				t.Errorf("watch: %v", e)
			}
			rs, invalid := compile.Compile(u.Snapshot, cfg)
			for _, e := range invalid {
				t.Errorf("compile: %v", e)
			}
			changed, err := applier.Apply(rs)
			if err != nil {
				t.Errorf("apply: %v", err)
				return
			}
			if changed {
				mu.Lock()
				applied = append(applied, time.Now())
				mu.Unlock()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("watch.Kube.Run = %v, want context.Canceled", err)
		}
	})

	listing := func() (string, error) {
		_, out, err := netnstest.LiveTable(topo.FW.Name, cfg.Table, apply.AltTable(cfg.Table))
		return out, err
	}

	// Addresses: pods from the topology's plan, clients outside.
	web, db, client0, moved := plan.Pods[0], plan.Pods[1], plan.Pods[2], plan.Pods[3]
	a := netip.MustParseAddr
	x4, x6 := a("192.0.2.2"), a("2001:db8:1::2")      // outside, in 192.0.2.0/24 and 2001:db8:1::/64
	y4, y6 := a("198.51.100.10"), a("2001:db8:2::10") // outside, in 198.51.100.0/24 and 2001:db8:2::/64
	for _, ad := range []netip.Addr{x4, x6, y4, y6} {
		if !contains(plan.Outside, ad) {
			t.Fatalf("%s is not an outside address of the topology plan %v", ad, plan.Outside)
		}
	}

	// Objects.
	nsA, nsB := "e2e-a", "e2e-b"
	if _, err := srv.CreateNamespace(ctx, nsA, map[string]string{"team": "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreateNamespace(ctx, nsB, map[string]string{"team": "b"}); err != nil {
		t.Fatal(err)
	}
	pod := func(ns, name, app string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/x",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
		}
	}
	webPod, err := srv.CreatePod(ctx, pod(nsA, "web", "web"), web.V4.String(), web.V6.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreatePod(ctx, pod(nsA, "db", "db"), db.V4.String(), db.V6.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreatePod(ctx, pod(nsB, "client", "client"), client0.V4.String(), client0.V6.String()); err != nil {
		t.Fatal(err)
	}
	tcp := corev1.ProtocolTCP
	port80 := intstr.FromInt32(80)
	webPolicy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "web-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "2001:db8:1::/64"}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80}},
			}},
		},
	}
	dbPolicy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "db-from-b"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80}},
			}},
		},
	}
	relabel := func(name, app string) error {
		p, err := srv.Client.CoreV1().Pods(nsA).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Labels["app"] = app
		_, err = srv.Client.CoreV1().Pods(nsA).Update(ctx, p, metav1.UpdateOptions{})
		return err
	}

	// Conditions on the kernel's table.
	selected := func(p fwtest.Pod) check {
		return check{fmt.Sprintf("%s and %s are in the ingress pod maps", p.V4, p.V6), func(l string) bool {
			return hasAddr(block(l, "map ingress_pods4"), p.V4) && hasAddr(block(l, "map ingress_pods6"), p.V6)
		}}
	}
	unselected := func(p fwtest.Pod) check {
		return check{fmt.Sprintf("%s and %s are in no ingress pod map", p.V4, p.V6), func(l string) bool {
			return !hasAddr(block(l, "map ingress_pods4"), p.V4) && !hasAddr(block(l, "map ingress_pods6"), p.V6)
		}}
	}
	present := func(s string) check {
		return check{s + " is in the table", func(l string) bool { return strings.Contains(l, s) }}
	}
	absent := func(s string) check {
		return check{s + " is not in the table", func(l string) bool { return !strings.Contains(l, s) }}
	}
	addrIn := func(ad netip.Addr) check {
		return check{ad.String() + " is in the table", func(l string) bool { return hasAddr(l, ad) }}
	}
	addrOut := func(ad netip.Addr) check {
		return check{ad.String() + " is not in the table", func(l string) bool { return !hasAddr(l, ad) }}
	}
	probe := func(src, dst netip.Addr, port uint16, pass bool) traffic {
		return traffic{fwtest.Probe{Src: src, Dst: dst, Proto: model.ProtoTCP, Port: port}, pass}
	}

	steps := []step{
		{
			name:   "pods created, no policy yet",
			change: func() error { return nil },
			want:   []check{present("chain forward"), unselected(web), unselected(db)},
			probes: []traffic{probe(x4, web.V4, 80, true), probe(y6, web.V6, 443, true)},
		},
		{
			name: "create policy web-ingress (ipBlock 192.0.2.0/24, 2001:db8:1::/64, TCP 80)",
			change: func() error {
				_, err := srv.Client.NetworkingV1().NetworkPolicies(nsA).Create(ctx, webPolicy, metav1.CreateOptions{})
				return err
			},
			want: []check{selected(web), present("192.0.2.0/24"), present("2001:db8:1::/64"), unselected(db)},
			probes: []traffic{probe(x4, web.V4, 80, true), probe(y4, web.V4, 80, false), probe(x4, web.V4, 443, false),
				probe(x6, web.V6, 80, true), probe(y6, web.V6, 80, false), probe(y4, db.V4, 80, true)},
		},
		{
			name: "change the ipBlocks to 198.51.100.0/24, 2001:db8:2::/64",
			change: func() error {
				p, err := srv.Client.NetworkingV1().NetworkPolicies(nsA).Get(ctx, webPolicy.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				p.Spec.Ingress[0].From[0].IPBlock.CIDR = "198.51.100.0/24"
				p.Spec.Ingress[0].From[1].IPBlock.CIDR = "2001:db8:2::/64"
				_, err = srv.Client.NetworkingV1().NetworkPolicies(nsA).Update(ctx, p, metav1.UpdateOptions{})
				return err
			},
			want:   []check{present("198.51.100.0/24"), absent("192.0.2.0/24"), present("2001:db8:2::/64"), absent("2001:db8:1::/64"), selected(web)},
			probes: []traffic{probe(y4, web.V4, 80, true), probe(x4, web.V4, 80, false), probe(y6, web.V6, 80, true), probe(x6, web.V6, 80, false)},
		},
		{
			name:   "relabel pod db app=web: it becomes selected",
			change: func() error { return relabel("db", "web") },
			want:   []check{selected(db), selected(web)},
			probes: []traffic{probe(x4, db.V4, 80, false), probe(y4, db.V4, 80, true)},
		},
		{
			name:   "relabel pod db app=db: it stops being selected",
			change: func() error { return relabel("db", "db") },
			want:   []check{unselected(db), selected(web)},
			probes: []traffic{probe(x4, db.V4, 80, true)},
		},
		{
			name: fmt.Sprintf("change pod web's IPs to %s, %s", moved.V4, moved.V6),
			change: func() error {
				p, err := srv.Client.CoreV1().Pods(nsA).Get(ctx, webPod.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				_, err = srv.SetPodIPs(ctx, p, moved.V4.String(), moved.V6.String())
				return err
			},
			want:   []check{selected(moved), unselected(web)},
			probes: []traffic{probe(x4, moved.V4, 80, false), probe(x4, web.V4, 80, true), probe(y4, moved.V4, 80, true)},
		},
		{
			name: "create policy db-from-b (namespaceSelector team=b)",
			change: func() error {
				_, err := srv.Client.NetworkingV1().NetworkPolicies(nsA).Create(ctx, dbPolicy, metav1.CreateOptions{})
				return err
			},
			want:   []check{selected(db), addrIn(client0.V4), addrIn(client0.V6)},
			probes: []traffic{probe(x4, db.V4, 80, false), probe(y6, db.V6, 80, false)},
		},
		{
			name: "delete policy web-ingress",
			change: func() error {
				return srv.Client.NetworkingV1().NetworkPolicies(nsA).Delete(ctx, webPolicy.Name, metav1.DeleteOptions{})
			},
			want:   []check{unselected(moved), absent("198.51.100.0/24"), absent("2001:db8:2::/64"), selected(db)},
			probes: []traffic{probe(x4, moved.V4, 80, true), probe(x6, moved.V6, 443, true)},
		},
		{
			name: "delete namespace " + nsB + " (its pod was a peer of db-from-b)",
			change: func() error {
				if err := srv.Client.CoreV1().Namespaces().Delete(ctx, nsB, metav1.DeleteOptions{}); err != nil {
					return err
				}
				return srv.FinishNamespaceDeletion(ctx, nsB)
			},
			want:   []check{addrOut(client0.V4), addrOut(client0.V6), selected(db)},
			probes: []traffic{probe(x4, db.V4, 80, false)},
		},
		{
			name: "delete namespace " + nsA,
			change: func() error {
				if err := srv.Client.CoreV1().Namespaces().Delete(ctx, nsA, metav1.DeleteOptions{}); err != nil {
					return err
				}
				return srv.FinishNamespaceDeletion(ctx, nsA)
			},
			want:   []check{unselected(db), unselected(moved), addrOut(db.V4)},
			probes: []traffic{probe(x4, db.V4, 80, true), probe(y6, db.V6, 80, true)},
		},
	}

	var summary []string
	for i, s := range steps {
		before, _ := listing()
		if i > 0 && allHold(s.want, before) {
			t.Fatalf("step %q: the table already satisfies the expectations before the change: the step tests nothing\n%s", s.name, before)
		}
		mu.Lock()
		nApplied := len(applied)
		mu.Unlock()
		start := time.Now()
		if err := s.change(); err != nil {
			t.Fatalf("step %q: API change: %v", s.name, err)
		}
		called := time.Since(start)
		limit := followLimit
		if i == 0 {
			limit = 10 * time.Second // the informers' initial sync
		}
		var l string
		var seen time.Duration
		for {
			l, err = listing()
			if err == nil && allHold(s.want, l) {
				seen = time.Since(start)
				break
			}
			if time.Since(start) > limit {
				var failed []string
				for _, c := range s.want {
					if err != nil || !c.ok(l) {
						failed = append(failed, c.what)
					}
				}
				t.Fatalf("step %q: the kernel's table did not follow within %v: not %s (err %v)\n%s", s.name, limit, strings.Join(failed, "; "), err, l)
			}
			time.Sleep(2 * time.Millisecond)
		}
		mu.Lock()
		var appliedAt time.Duration
		if len(applied) > nApplied {
			appliedAt = applied[nApplied].Sub(start)
		}
		mu.Unlock()
		line := fmt.Sprintf("%-70s API %6.1f ms, applied %6.1f ms, in kernel (nft list) %6.1f ms",
			s.name, ms(called), ms(appliedAt), ms(seen))
		t.Log(line)
		summary = append(summary, line)

		// Real connections agree with the table.
		for _, p := range s.probes {
			r := topo.Check(ctx, p.Probe, 250*time.Millisecond)
			if r.Err != nil {
				t.Errorf("step %q: probe %s: %v", s.name, p.Probe, r.Err)
			} else if r.Passed != p.pass {
				t.Errorf("step %q: probe %s passed=%v, want %v\n%s", s.name, p.Probe, r.Passed, p.pass, l)
			}
		}
	}
	t.Logf("latency from the API call to the kernel, per step (debounce %v):\n%s", cfg.Debounce, strings.Join(summary, "\n"))
}

type step struct {
	name   string
	change func() error
	want   []check
	probes []traffic
}

type check struct {
	what string
	ok   func(listing string) bool
}

type traffic struct {
	fwtest.Probe
	pass bool
}

func allHold(cs []check, l string) bool {
	for _, c := range cs {
		if !c.ok(l) {
			return false
		}
	}
	return true
}

// block returns the block of an nft listing that starts with header (e.g.
// "map ingress_pods4"), up to its closing brace; "" when absent.
func block(listing, header string) string {
	i := strings.Index(listing, "\t"+header+" {")
	if i < 0 {
		return ""
	}
	rest := listing[i:]
	if j := strings.Index(rest, "\n\t}"); j >= 0 {
		return rest[:j]
	}
	return rest
}

// hasAddr reports whether addr occurs in s as a whole address (not as the
// prefix of a longer one).
func hasAddr(s string, addr netip.Addr) bool {
	re := regexp.MustCompile(`(^|[^0-9a-fA-F:.])` + regexp.QuoteMeta(addr.String()) + `($|[^0-9a-fA-F:.])`)
	return re.MatchString(s)
}

func contains(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
