//go:build linux

package firewall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/firewall/oracle"
)

// The cluster every scenario starts from (addresses from DefaultPlan):
//
//	frontend {team: web, env: prod}: web-0 {app: web}        pod 0, ports http TCP 8000, dns UDP 8005, sig SCTP 8009
//	                                 web-1 {app: web, track: canary} pod 1, ports http TCP 8010, dns UDP 7999
//	                                 Service web-lb, type LoadBalancer, ingress IPs = Plan.LB,
//	                                 ports 80 (TCP by default), 8000/UDP, 8005/SCTP
//	backend  {team: api, env: prod}: api-0 {app: api}         pod 2, ports http TCP 9000, https TCP 443
//	tools    {env: dev}:             tool-0 {app: tool}       pod 3
//	                                 job-0 (Succeeded) claiming the node's IPs: takes no part
//	external {zone: dmz}:            ext-0 {app: ext}   198.51.100.10, 2001:db8:2::10 (outside!), port http TCP 80
//	                                 ext-1 {app: other} 192.0.2.130, 2001:db8:1::8002 (outside)
//
// ext-0 and ext-1 are pods whose IPs are on the outside of the firewall
// (pods of another segment): the only way selector peers can match
// traffic that crosses it.
func baseSnapshot(p Plan) cluster.Snapshot {
	nsObj := func(name string, labels map[string]string) corev1.Namespace {
		return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	port := func(name string, proto corev1.Protocol, n int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: name, Protocol: proto, ContainerPort: n}
	}
	pod := func(ns, name string, labels map[string]string, phase corev1.PodPhase, ips []netip.Addr, ports ...corev1.ContainerPort) corev1.Pod {
		po := corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x", Ports: ports}}},
			Status:     corev1.PodStatus{Phase: phase},
		}
		for _, a := range ips {
			po.Status.PodIPs = append(po.Status.PodIPs, corev1.PodIP{IP: a.String()})
		}
		po.Status.PodIP = ips[0].String()
		return po
	}
	a := netip.MustParseAddr
	return cluster.Snapshot{
		Namespaces: []corev1.Namespace{
			nsObj("frontend", map[string]string{"team": "web", "env": "prod"}),
			nsObj("backend", map[string]string{"team": "api", "env": "prod"}),
			nsObj("tools", map[string]string{"env": "dev"}),
			nsObj("external", map[string]string{"zone": "dmz"}),
		},
		Pods: []corev1.Pod{
			pod("frontend", "web-0", map[string]string{"app": "web"}, corev1.PodRunning, p.Pods[0].Addrs(),
				port("http", "", 8000), port("dns", corev1.ProtocolUDP, 8005), port("sig", corev1.ProtocolSCTP, 8009)),
			pod("frontend", "web-1", map[string]string{"app": "web", "track": "canary"}, corev1.PodRunning, p.Pods[1].Addrs(),
				port("http", corev1.ProtocolTCP, 8010), port("dns", corev1.ProtocolUDP, 7999)),
			pod("backend", "api-0", map[string]string{"app": "api"}, corev1.PodRunning, p.Pods[2].Addrs(),
				port("http", corev1.ProtocolTCP, 9000), port("https", corev1.ProtocolTCP, 443)),
			pod("tools", "tool-0", map[string]string{"app": "tool"}, corev1.PodPending, p.Pods[3].Addrs()),
			pod("tools", "job-0", map[string]string{"app": "tool"}, corev1.PodSucceeded, p.Node.Addrs()),
			pod("external", "ext-0", map[string]string{"app": "ext"}, corev1.PodRunning,
				[]netip.Addr{a("198.51.100.10"), a("2001:db8:2::10")}, port("http", "", 80)),
			pod("external", "ext-1", map[string]string{"app": "other"}, corev1.PodRunning,
				[]netip.Addr{a("192.0.2.130"), a("2001:db8:1::8002")}),
		},
		Services: []corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "frontend", Name: "web-lb"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80},
				{Name: "dns", Port: 8000, Protocol: corev1.ProtocolUDP},
				{Name: "sig", Port: 8005, Protocol: corev1.ProtocolSCTP},
			}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: p.LB.V4.String()}, {IP: p.LB.V6.String()},
			}}},
		}},
	}
}

// parsePolicies reads NetworkPolicies from YAML documents separated by
// "---" lines.
func parsePolicies(t *testing.T, docs string) []networkingv1.NetworkPolicy {
	t.Helper()
	var out []networkingv1.NetworkPolicy
	for i, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var np networkingv1.NetworkPolicy
		if err := yaml.UnmarshalStrict([]byte(doc), &np); err != nil {
			t.Fatalf("policy document %d: %v\n%s", i, err, doc)
		}
		out = append(out, np)
	}
	return out
}

// packet is the model.Packet the fw namespace sees for a probe's first
// packet: cluster0 → uplink0 when the source is in the cluster namespace,
// uplink0 → cluster0 otherwise.
func packet(topo *Topology, p Probe) model.Packet {
	pk := model.Packet{Iif: UplinkIf, Oif: ClusterIf, Src: p.Src, Dst: p.Dst, Proto: p.Proto, DstPort: p.Port}
	if ns, _ := topo.nsOf(p.Src); ns == topo.Cluster {
		pk.Iif, pk.Oif = ClusterIf, UplinkIf
	}
	return pk
}

// firewall is the fw namespace's applier with the state the comparison
// needs.
type firewall struct {
	topo    *Topology
	applier *apply.Applier
}

func newFirewall(t *testing.T, topo *Topology) *firewall {
	t.Helper()
	a, err := apply.New(apply.WithNetNS(topo.FW.Fd()), apply.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("applier: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return &firewall{topo: topo, applier: a}
}

// apply compiles and applies; it fails the test on any error other than
// the wantErrs policy errors the scenario expects.
func (f *firewall) apply(t *testing.T, s cluster.Snapshot, cfg config.Config, wantErrs int) model.Ruleset {
	t.Helper()
	rs, errs := compile.Compile(s, cfg)
	if len(errs) != wantErrs {
		t.Fatalf("compile: %d errors, want %d: %v", len(errs), wantErrs, errs)
	}
	start := time.Now()
	changed, err := f.applier.Apply(rs)
	if err != nil {
		t.Fatalf("apply: %v\nruleset:\n%s", err, model.Render(rs))
	}
	if !changed {
		t.Logf("apply: ruleset unchanged")
	}
	t.Logf("compiled and applied %d sets, %d chains in %v", len(rs.Sets), len(rs.Chains), time.Since(start).Round(time.Microsecond))
	return rs
}

// expectation is a hand-derived verdict, checked besides the oracle's.
type expectation struct {
	Probe
	pass bool
}

// compareAll probes and compares every verdict with the oracle; on a
// disagreement it tells model.Eval's verdict of the applied ruleset and
// the verdict with the same ruleset loaded by nft -f instead of the
// applier, which locates the fault (oracle, compiler or applier).
func (f *firewall) compareAll(t *testing.T, s cluster.Snapshot, cfg config.Config, rs model.Ruleset, probes []Probe, expect []expectation) {
	t.Helper()
	start := time.Now()
	res := f.topo.Run(context.Background(), probes, probeTimeout, probeParallel)
	elapsed := time.Since(start)
	byProbe := map[Probe]Result{}
	passed := 0
	var bad []Result
	for _, r := range res {
		byProbe[r.Probe] = r
		if r.Passed {
			passed++
		}
		if r.Err != nil {
			t.Errorf("%s: %v", r.Probe, r.Err)
			continue
		}
		if want := oracle.Evaluate(s, cfg, packet(f.topo, r.Probe)); r.Passed != want {
			bad = append(bad, r)
		}
	}
	// A block the oracle says should pass is checked again, slowly: on two
	// busy cores an answer can take longer than probeTimeout. A pass is
	// definite and never re-checked.
	slow := 0
	kept := bad[:0]
	for _, r := range bad {
		if !r.Passed {
			if again := f.topo.Check(context.Background(), r.Probe, recheckTimeout); again.Passed {
				slow++
				continue
			}
		}
		kept = append(kept, r)
	}
	bad = kept
	t.Logf("%d probes (%d passed, %d blocked) in %v; %d passed only when re-checked slowly", len(res), passed, len(res)-passed, elapsed.Round(time.Millisecond), slow)
	if slow > len(res)/100 {
		t.Errorf("%d of %d probes needed a slow re-check: the probes are not reliable at %v", slow, len(res), probeTimeout)
	}
	for _, e := range expect {
		r, ok := byProbe[e.Probe]
		if !ok {
			r = f.topo.Check(context.Background(), e.Probe, probeTimeout)
		}
		if r.Err == nil && !r.Passed && e.pass {
			r = f.topo.Check(context.Background(), e.Probe, recheckTimeout)
		}
		if r.Err == nil && r.Passed != e.pass {
			t.Errorf("hand-derived expectation %s: passed=%v, want %v (oracle %v, model.Eval %v)", e.Probe, r.Passed, e.pass,
				oracle.Evaluate(s, cfg, packet(f.topo, e.Probe)), model.Eval(rs, packet(f.topo, e.Probe)))
		}
	}
	if len(bad) == 0 {
		return
	}
	// Locate the fault: the same ruleset through nft -f.
	sort.Slice(bad, func(i, j int) bool { return bad[i].Probe.String() < bad[j].Probe.String() })
	nft(t, f.topo.FW, model.RenderReplace(rs), "-f", "-")
	var again []Probe
	for _, r := range bad {
		again = append(again, r.Probe)
	}
	viaNft := f.topo.Run(context.Background(), again, probeTimeout, probeParallel)
	const show = 40
	for i, r := range bad {
		if i == show {
			t.Errorf("... and %d more disagreements", len(bad)-show)
			break
		}
		pk := packet(f.topo, r.Probe)
		t.Errorf("DISAGREE %s: kernel(applier)=%v oracle=%v model.Eval=%v kernel(nft -f)=%v", r.Probe, r.Passed,
			oracle.Evaluate(s, cfg, pk), model.Eval(rs, pk), viaNft[i].Passed)
	}
	t.Logf("ruleset:\n%s", model.Render(rs))
	// Put the applier's own table back for the next scenario.
	if _, err := f.applier.Apply(rs); err != nil {
		t.Fatalf("re-apply after nft -f: %v", err)
	}
}

func mustProbe(t *testing.T, topo *Topology, proto uint8, src, dst netip.Addr, port uint16) Probe {
	t.Helper()
	if _, err := topo.nsOf(src); err != nil {
		t.Fatal(err)
	}
	return Probe{Src: src, Dst: dst, Proto: proto, Port: port}
}

// allDirections is the probe matrix of a scenario: egress from every pod
// and the node to every outside address, ingress from every outside
// address to every pod, the node and the load balancer.
func allDirections(topo *Topology, ports []uint16) []Probe {
	return append(egress(topo, ports, AllProtos()), ingress(topo, ports, AllProtos())...)
}

func (r Result) String() string {
	return fmt.Sprintf("%s passed=%v err=%v attempts=%d", r.Probe, r.Passed, r.Err, r.Attempts)
}
