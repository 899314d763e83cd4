package cluster

import (
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(ns, name string, phase corev1.PodPhase, ips ...string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: phase}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func TestPods(t *testing.T) {
	host := pod("a", "host", corev1.PodRunning, "192.0.2.1")
	host.Spec.HostNetwork = true
	now := metav1.Now()
	gone := pod("a", "gone", corev1.PodRunning, "10.0.0.9")
	gone.DeletionTimestamp = &now
	s := Snapshot{Pods: []corev1.Pod{
		pod("b", "second", corev1.PodRunning, "10.0.0.1", "fd00::1"),
		pod("a", "first", corev1.PodPending, "::ffff:10.0.0.1"), // same IP, mapped: a/first wins
		pod("a", "done", corev1.PodSucceeded, "10.0.0.2"),
		pod("a", "noip", corev1.PodRunning),
		host, gone,
	}}
	got := Pods(s)
	if len(got) != 2 || got[0].Name != "first" || got[1].Name != "second" {
		t.Fatalf("pods: %+v", got)
	}
	if got[0].IPs[0] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("first's IP %v not unmapped", got[0].IPs)
	}
	if len(got[1].IPs) != 1 || got[1].IPs[0] != netip.MustParseAddr("fd00::1") {
		t.Errorf("second keeps only its unclaimed IP, got %v", got[1].IPs)
	}
}

func TestTypes(t *testing.T) {
	p := &networkingv1.NetworkPolicy{}
	if in, eg := Types(p); !in || eg {
		t.Errorf("no types, no egress rules: %v %v", in, eg)
	}
	p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
	if in, eg := Types(p); !in || !eg {
		t.Errorf("no types, egress rules: %v %v", in, eg)
	}
	p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	if in, eg := Types(p); in || !eg {
		t.Errorf("Egress only: %v %v", in, eg)
	}
}

func TestValidate(t *testing.T) {
	bad := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}}
	bad.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.0.0.0/8"}}}}}}
	err := Validate(bad)
	var pe *PolicyError
	if !errors.As(err, &pe) || !pe.Isolates || !errors.Is(err, ErrInvalid) {
		t.Fatalf("except equal to its cidr: %v", err)
	}
	bad.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}
	if err := Validate(bad); !errors.As(err, &pe) || pe.Isolates {
		t.Fatalf("invalid podSelector must not isolate: %v", err)
	}
	good := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "ok"}}
	if err := Validate(good); err != nil {
		t.Errorf("valid policy: %v", err)
	}
}
