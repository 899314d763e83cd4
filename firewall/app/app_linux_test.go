package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/metrics"
	"github.com/anvil-metal/anvil/firewall/watch"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// chanSource delivers the updates sent on it.
type chanSource chan watch.Update

func (c chanSource) Run(ctx context.Context, notify func(watch.Update)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case u := <-c:
			notify(u)
		}
	}
}

func snapshot(cidr string, withBad bool) cluster.Snapshot {
	s := cluster.Snapshot{
		Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}},
		Pods: []corev1.Pod{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}}},
		}},
		Policies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-out"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}}}},
			},
		}},
	}
	if withBad {
		s.Policies = append(s.Policies, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "typo"},
			Spec: networkingv1.NetworkPolicySpec{
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "300.0.0.0/8"}}}}},
			},
		})
	}
	return s
}

// TestRunReconciles drives the loop with updates and checks the kernel's
// table, the error report and the metrics after each.
func TestRunReconciles(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-app")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a, err := apply.New(apply.WithNetNS(ns.FD), apply.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cfg := config.Defaults()
	cfg.Table = "apptest"
	m := metrics.New()
	src := make(chanSource)
	results := make(chan Result, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Source: src, Applier: a, Metrics: m, Logger: log,
			OnApplied: func(r Result) { results <- r }})
	}()
	next := func(s cluster.Snapshot) Result {
		t.Helper()
		src <- watch.Update{Snapshot: s}
		select {
		case r := <-results:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no reconcile")
			return Result{}
		}
	}

	r := next(snapshot("203.0.113.0/24", true))
	if r.Err != nil || !r.Changed {
		t.Fatalf("first apply: changed=%v err=%v", r.Changed, r.Err)
	}
	if len(r.Invalid) != 1 || !strings.Contains(r.Invalid[0].Error(), "prod/typo") {
		t.Fatalf("invalid policies: %v", r.Invalid)
	}
	table := ns.ListLive(t, cfg.Table, apply.AltTable(cfg.Table))
	for _, want := range []string{"203.0.113.0/24", "chain eg_prod_web-out", `comment "prod/web-out"`} {
		if !strings.Contains(table, want) {
			t.Errorf("kernel table lacks %q:\n%s", want, table)
		}
	}
	if n := strings.Count(logs.String(), "prod/typo"); n != 1 {
		t.Errorf("the invalid policy was logged %d times, want 1:\n%s", n, logs.String())
	}

	r = next(snapshot("203.0.113.0/24", true))
	if r.Err != nil || r.Changed {
		t.Errorf("same snapshot: changed=%v err=%v, want no change", r.Changed, r.Err)
	}
	if n := strings.Count(logs.String(), "prod/typo"); n != 1 {
		t.Errorf("the unchanged invalid policy was logged again (%d times)", n)
	}

	r = next(snapshot("198.51.100.0/24", false))
	if r.Err != nil || !r.Changed || len(r.Invalid) != 0 {
		t.Errorf("update: changed=%v err=%v invalid=%v", r.Changed, r.Err, r.Invalid)
	}
	if table := ns.ListLive(t, cfg.Table, apply.AltTable(cfg.Table)); !strings.Contains(table, "198.51.100.0/24") || strings.Contains(table, "203.0.113.0/24") {
		t.Errorf("kernel table did not follow the update:\n%s", table)
	}
	want := `
# HELP anvil_firewall_applies_total Reconciles by result: changed (a new ruleset was committed), unchanged (nothing to do), error (the kernel kept the last good ruleset).
# TYPE anvil_firewall_applies_total counter
anvil_firewall_applies_total{result="changed"} 2
anvil_firewall_applies_total{result="unchanged"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "anvil_firewall_applies_total"); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}
