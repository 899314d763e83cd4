package policygen

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
)

func TestDeterministic(t *testing.T) {
	gen := func(seed uint64) (cluster.Snapshot, config.Config, string) {
		r := rand.New(rand.NewPCG(seed, 1))
		s := Snapshot(r, Options{})
		cfg := Config(r)
		pk := Packets(r, s, cfg, 50)
		var b strings.Builder
		for _, p := range pk {
			b.WriteString(p.Src.String() + ">" + p.Dst.String() + " ")
		}
		return s, cfg, b.String()
	}
	for seed := range uint64(20) {
		s1, c1, p1 := gen(seed)
		s2, c2, p2 := gen(seed)
		if !apiequality.Semantic.DeepEqual(s1, s2) || !reflect.DeepEqual(c1, c2) || p1 != p2 {
			t.Fatalf("seed %d: two runs differ", seed)
		}
	}
	_, _, a := gen(1)
	_, _, b := gen(2)
	if a == b {
		t.Error("seeds 1 and 2 gave the same packets")
	}
}

func TestConfigValid(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	seen := map[string]bool{}
	for range 200 {
		c := Config(r)
		if err := c.Validate(); err != nil {
			t.Fatalf("Config() = %+v: %v", c, err)
		}
		seen["egress "+string(c.DefaultEgress)] = true
		seen["ingress "+string(c.DefaultIngress)] = true
		if c.LoadBalancerIngress {
			seen["lb"] = true
		}
		if strings.HasSuffix(c.ClusterInterfaces[len(c.ClusterInterfaces)-1], "*") {
			seen["wildcard"] = true
		}
	}
	for _, want := range []string{"egress allow", "egress deny", "ingress allow", "ingress deny", "lb", "wildcard"} {
		if !seen[want] {
			t.Errorf("200 configs never had %s", want)
		}
	}
}

// TestSnapshotCoverage checks that the generator reaches every feature the
// oracle and the compiler must agree on.
func TestSnapshotCoverage(t *testing.T) {
	seen := map[string]int{}
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		s := Snapshot(r, Options{})
		cfg := Config(r)
		for _, np := range s.Policies {
			countPolicy(seen, &np)
		}
		for _, p := range s.Pods {
			if p.Spec.HostNetwork {
				seen["hostNetwork pod"]++
			}
			if p.DeletionTimestamp != nil {
				seen["deleting pod"]++
			}
			if len(p.Status.PodIPs) == 0 && p.Status.PodIP == "" {
				seen["pod without IP"]++
			}
			if len(p.Status.PodIPs) == 2 {
				seen["dual-stack pod"]++
			}
		}
		pods := cluster.Pods(s)
		claimedBy := map[netip.Addr]string{}
		for _, p := range s.Pods {
			for _, a := range podIPs(&cluster.Snapshot{Pods: []corev1.Pod{p}}) {
				if other, ok := claimedBy[a]; ok && other != p.Name {
					seen["IP collision"]++
				}
				claimedBy[a] = p.Name
			}
		}
		for _, svc := range s.Services {
			if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
				seen["load balancer"]++
			}
		}
		for _, p := range Packets(r, s, cfg, 50) {
			seen["proto "+protoKey(p.Proto)]++
			if p.Src.Is6() {
				seen["v6 packet"]++
			}
			for _, pod := range pods {
				for _, ip := range pod.IPs {
					if ip == p.Dst || ip == p.Src {
						seen["packet at a pod IP"]++
					}
				}
			}
			if p.Proto != 6 && p.Proto != 17 && p.Proto != 132 && p.DstPort != 0 {
				t.Errorf("%+v: a port on a protocol without ports", p)
			}
			if p.Src.Is4() != p.Dst.Is4() {
				t.Errorf("%+v: mixed families", p)
			}
			in, out := isClusterIf(cfg.ClusterInterfaces, p.Iif), isClusterIf(cfg.ClusterInterfaces, p.Oif)
			switch {
			case in && !out:
				seen["egress packet"]++
			case out && !in:
				seen["ingress packet"]++
			case in && out:
				seen["cluster to cluster"]++
			default:
				seen["outside to outside"]++
			}
		}
	}
	for _, want := range []string{
		"policyTypes absent", "policyTypes Ingress", "policyTypes Egress", "empty podSelector", "matchExpressions",
		"ingress rule", "egress rule", "empty peers", "empty ports", "v4 ipBlock", "v6 ipBlock", "except", "two excepts",
		"ipBlock /0", "non-canonical cidr", "podSelector peer", "namespaceSelector peer", "both selectors peer",
		"protocol nil", "protocol UDP", "protocol SCTP", "protocol-only port", "numeric port", "port range", "range to 65535", "named port",
		"invalid isolating policy", "invalid ignored policy", "hostNetwork pod", "deleting pod", "pod without IP", "dual-stack pod",
		"IP collision", "load balancer", "proto TCP", "proto UDP", "proto SCTP", "proto ICMP", "proto ICMPv6", "proto other",
		"v6 packet", "packet at a pod IP", "egress packet", "ingress packet", "cluster to cluster", "outside to outside",
	} {
		if seen[want] == 0 {
			t.Errorf("300 snapshots never had: %s", want)
		}
	}
	t.Logf("%v", seen)
}

func protoKey(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return "other"
}

func countPolicy(seen map[string]int, np *networkingv1.NetworkPolicy) {
	if err := cluster.Validate(np); err != nil {
		var pe *cluster.PolicyError
		if errors.As(err, &pe) && pe.Isolates {
			seen["invalid isolating policy"]++
		} else {
			seen["invalid ignored policy"]++
		}
	}
	switch {
	case len(np.Spec.PolicyTypes) == 0:
		seen["policyTypes absent"]++
	case len(np.Spec.PolicyTypes) == 1:
		seen["policyTypes "+string(np.Spec.PolicyTypes[0])]++
	}
	if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) == 0 {
		seen["empty podSelector"]++
	}
	if len(np.Spec.PodSelector.MatchExpressions) > 0 {
		seen["matchExpressions"]++
	}
	rule := func(kind string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
		seen[kind]++
		if len(peers) == 0 {
			seen["empty peers"]++
		}
		if len(ports) == 0 {
			seen["empty ports"]++
		}
		for _, p := range peers {
			switch {
			case p.IPBlock != nil:
				pre, err := netip.ParsePrefix(p.IPBlock.CIDR)
				if err != nil {
					continue
				}
				if pre.Addr().Is4() {
					seen["v4 ipBlock"]++
				} else {
					seen["v6 ipBlock"]++
				}
				if pre.Bits() == 0 {
					seen["ipBlock /0"]++
				}
				if pre != pre.Masked() {
					seen["non-canonical cidr"]++
				}
				if len(p.IPBlock.Except) > 0 {
					seen["except"]++
				}
				if len(p.IPBlock.Except) > 1 {
					seen["two excepts"]++
				}
			case p.PodSelector != nil && p.NamespaceSelector != nil:
				seen["both selectors peer"]++
			case p.PodSelector != nil:
				seen["podSelector peer"]++
			case p.NamespaceSelector != nil:
				seen["namespaceSelector peer"]++
			}
		}
		for _, p := range ports {
			if p.Protocol == nil {
				seen["protocol nil"]++
			} else {
				seen["protocol "+string(*p.Protocol)]++
			}
			switch {
			case p.Port == nil:
				seen["protocol-only port"]++
			case p.Port.Type == intstr.String:
				seen["named port"]++
			case p.EndPort != nil:
				seen["port range"]++
				if *p.EndPort == 65535 {
					seen["range to 65535"]++
				}
			default:
				seen["numeric port"]++
			}
		}
	}
	for _, r := range np.Spec.Ingress {
		rule("ingress rule", r.From, r.Ports)
	}
	for _, r := range np.Spec.Egress {
		rule("egress rule", r.To, r.Ports)
	}
}

// TestPacketsHitEdges checks that cidr and except boundaries, one past
// them, and range ends are drawn.
func TestPacketsHitEdges(t *testing.T) {
	s := cluster.Snapshot{Policies: []networkingv1.NetworkPolicy{{
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/16", Except: []string{"172.16.8.0/24"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(7000)), EndPort: ptr[int32](7100)}},
		}}},
	}}}
	want := map[string]bool{}
	for _, a := range []string{"172.15.255.255", "172.16.0.0", "172.16.255.255", "172.17.0.0", "172.16.7.255", "172.16.8.0", "172.16.8.255", "172.16.9.0"} {
		want[a] = false
	}
	ports := map[uint16]bool{6999: false, 7000: false, 7100: false, 7101: false}
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range Packets(r, s, config.Defaults(), 3000) {
		for _, a := range []netip.Addr{p.Src, p.Dst} {
			if _, ok := want[a.String()]; ok {
				want[a.String()] = true
			}
		}
		if _, ok := ports[p.DstPort]; ok {
			ports[p.DstPort] = true
		}
	}
	for a, hit := range want {
		if !hit {
			t.Errorf("address %s never drawn", a)
		}
	}
	for p, hit := range ports {
		if !hit {
			t.Errorf("port %d never drawn", p)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24": "10.0.0.255", "10.0.0.7/32": "10.0.0.7", "0.0.0.0/0": "255.255.255.255",
		"10.1.2.3/15": "10.1.255.255", "fd00::/120": "fd00::ff", "::/0": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		if got := LastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("LastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestShrink(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	// "Fails" while some ipBlock has an except inside a v6 cidr.
	fails := func(s cluster.Snapshot) bool {
		for _, np := range s.Policies {
			for _, rule := range np.Spec.Ingress {
				for _, p := range rule.From {
					if p.IPBlock != nil && strings.Contains(p.IPBlock.CIDR, ":") && len(p.IPBlock.Except) > 0 {
						return true
					}
				}
			}
		}
		return false
	}
	var s cluster.Snapshot
	for {
		s = Snapshot(r, Options{Pods: 8, Policies: 6, Services: 2})
		if fails(s) && len(s.Policies) > 1 && len(s.Pods) > 0 {
			break
		}
	}
	before, _ := YAML(s, nil)
	got := Shrink(s, fails)
	if after, _ := YAML(s, nil); after != before {
		t.Error("Shrink modified its input")
	}
	if !fails(got) {
		t.Fatal("shrunk snapshot no longer fails")
	}
	y1, _ := YAML(got, nil)
	if y2, _ := YAML(Shrink(s, fails), nil); y1 != y2 {
		t.Errorf("Shrink is not deterministic:\n%s\nvs\n%s", y1, y2)
	}
	if len(got.Pods)+len(got.Namespaces)+len(got.Services) != 0 || len(got.Policies) != 1 {
		t.Fatalf("not minimal: %d pods, %d namespaces, %d services, %d policies", len(got.Pods), len(got.Namespaces), len(got.Services), len(got.Policies))
	}
	spec := got.Policies[0].Spec
	if len(spec.Ingress) != 1 || len(spec.Egress) != 0 || len(spec.Ingress[0].From) != 1 || len(spec.Ingress[0].Ports) != 0 || len(spec.Ingress[0].From[0].IPBlock.Except) != 1 || len(spec.PolicyTypes) != 0 {
		y, _ := YAML(got, nil)
		t.Errorf("not minimal:\n%s", y)
	}
}

// TestYAMLRoundTrip parses YAML's output back.
func TestYAMLRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 30 {
		s := Snapshot(r, Options{})
		cfg := Config(r)
		text, err := YAML(s, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, gotCfg, err := Parse(text)
		if err != nil {
			t.Fatalf("%v in\n%s", err, text)
		}
		if gotCfg == nil || !reflect.DeepEqual(*gotCfg, cfg) {
			t.Errorf("config: got %+v, want %+v", gotCfg, cfg)
		}
		if !apiequality.Semantic.DeepEqual(got, s) {
			t.Errorf("round trip differs:\n%s", text)
		}
	}
}

func TestParse(t *testing.T) {
	s, cfg, err := Parse("# config: {\"DefaultEgress\": \"deny\"}\n# a comment\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil || cfg.DefaultEgress != config.Deny || cfg.DefaultIngress != config.Allow || len(s.Namespaces) != 1 || s.Namespaces[0].Name != "a" {
		t.Errorf("got %+v, %+v", s, cfg)
	}
	if _, cfg, err := Parse("kind: Namespace\nmetadata: {name: a}\n"); err != nil || cfg != nil {
		t.Errorf("without a config line: cfg %v, err %v", cfg, err)
	}
	for _, bad := range []string{
		"kind: Deployment\n",
		"kind: Pod\nmetadata: {name: a}\nspec: {bogus: 1}\n",
		"metadata: {name: a}\n",
		"# config: {nope\n",
	} {
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}
