// Package policygen generates random but deterministic inputs for
// anvil-firewall's property tests and fuzzers: cluster snapshots
// (Namespaces, Pods, networking.k8s.io/v1 NetworkPolicies and Services of
// type LoadBalancer), configurations, and packets biased towards the
// addresses and ports where policies have edges (pod IPs, CIDR and except
// boundaries, port-range ends, named-port numbers). Everything is drawn
// from small pools so that policies and pods collide often. The same
// *rand.Rand state always yields the same output. Shrink reduces a failing
// snapshot to a minimal one, and YAML prints it as manifests.
package policygen

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
)

// Options bounds a snapshot; zero fields take the defaults in brackets.
type Options struct {
	Namespaces int // at most this many namespaces [3]
	Pods       int // at most this many pods [8]
	Policies   int // at most this many policies [4]
	Services   int // at most this many services [2]
	// InvalidPercent is the chance, in percent, that a policy is made
	// invalid in one of the ways cluster.Validate rejects [5]; negative:
	// never.
	InvalidPercent int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Namespaces, 3)
	def(&o.Pods, 8)
	def(&o.Policies, 4)
	def(&o.Services, 2)
	def(&o.InvalidPercent, 5)
	return o
}

// Pools, as functions so that no package state is shared. Pod addresses
// are drawn from a few small ranges, so that random CIDRs often contain
// (or just miss) them.
func namespaceNames() []string { return []string{"a", "b", "c", "d"} }

func podLabelKeys() []string { return []string{"app", "tier", "ver"} }

func podLabelValues() map[string][]string {
	return map[string][]string{"app": {"web", "db", "api"}, "tier": {"fe", "be"}, "ver": {"v1", "v2"}}
}

func nsLabelKeys() []string { return []string{"env", "team"} }

func nsLabelValues() map[string][]string {
	return map[string][]string{"env": {"prod", "dev"}, "team": {"x", "y"}}
}

// nsSelectorKeys and nsSelectorValues add the name label the API server
// sets on every namespace.
func nsSelectorKeys() []string { return append(nsLabelKeys(), "kubernetes.io/metadata.name") }

func nsSelectorValues() map[string][]string {
	m := nsLabelValues()
	m["kubernetes.io/metadata.name"] = namespaceNames()
	return m
}

func portNames() []string { return []string{"http", "dns", "metrics", "web"} }

func portNumbers() []int32 { return []int32{1, 53, 80, 443, 5000, 5005, 5010, 8080, 9100, 65535} }

func protocols() []corev1.Protocol {
	return []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
}

// podBases are the starts of the ranges pod addresses come from (each
// followed by podRangeLen addresses).
func podBases() []netip.Addr {
	return []netip.Addr{
		netip.MustParseAddr("10.0.0.0"),
		netip.MustParseAddr("10.0.1.0"),
		netip.MustParseAddr("10.1.0.252"), // straddles 10.1.0.255 / 10.1.1.0
		netip.MustParseAddr("fd00::"),
		netip.MustParseAddr("fd00:0:0:1::"),
		netip.MustParseAddr("fd00:1::fffc"),
	}
}

const podRangeLen = 8

// outsideAddrs are addresses outside the cluster, some at the extremes of
// their family.
func outsideAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{
		"192.0.2.1", "192.0.2.77", "198.51.100.1", "203.0.113.9", "8.8.8.8", "0.0.0.0", "255.255.255.255", "10.255.255.255", "11.0.0.0",
		"2001:db8::1", "2001:db8:dead::1", "2001:db8:ffff::9", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", "fd01::1",
	} {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func chance(r *rand.Rand, percent int) bool { return r.IntN(100) < percent }

func ptr[T any](v T) *T { return &v }

// podAddr draws a pod address of the family (4 or 6).
func podAddr(r *rand.Rand, fam int) netip.Addr {
	var bases []netip.Addr
	for _, b := range podBases() {
		if (fam == 4) == b.Is4() {
			bases = append(bases, b)
		}
	}
	a := pick(r, bases)
	for range r.IntN(podRangeLen) {
		a = a.Next()
	}
	return a
}

// Snapshot generates a snapshot within o's bounds.
func Snapshot(r *rand.Rand, o Options) cluster.Snapshot {
	o = o.withDefaults()
	var s cluster.Snapshot
	nsNames := namespaceNames()[:1+r.IntN(min(o.Namespaces, len(namespaceNames())))]
	for _, n := range nsNames {
		s.Namespaces = append(s.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: randomLabels(r, nsLabelKeys(), nsLabelValues())}})
	}
	// A namespace pods and policies may use though the snapshot lacks it.
	podNS := append(append([]string{}, nsNames...), "zz")
	for i := range r.IntN(o.Pods + 1) {
		s.Pods = append(s.Pods, randomPod(r, fmt.Sprintf("p%d", i), pickNS(r, podNS)))
	}
	for i := range r.IntN(o.Policies + 1) {
		ns := pickNS(r, podNS)
		if len(s.Pods) > 0 && chance(r, 70) {
			ns = pick(r, s.Pods).Namespace // where it selects something
		}
		np := randomPolicy(r, fmt.Sprintf("np%d", i), ns, &s)
		if o.InvalidPercent > 0 && chance(r, o.InvalidPercent) {
			breakPolicy(r, &np)
		}
		s.Policies = append(s.Policies, np)
	}
	for i := range r.IntN(o.Services + 1) {
		s.Services = append(s.Services, randomService(r, fmt.Sprintf("svc%d", i), pickNS(r, podNS), &s))
	}
	return s
}

// pickNS mostly picks a namespace of the snapshot, rarely the missing one
// (the last).
func pickNS(r *rand.Rand, names []string) string {
	if chance(r, 5) {
		return names[len(names)-1]
	}
	return pick(r, names[:len(names)-1])
}

func randomLabels(r *rand.Rand, keys []string, values map[string][]string) map[string]string {
	l := map[string]string{}
	for _, k := range keys {
		if chance(r, 60) {
			l[k] = pick(r, values[k])
		}
	}
	if len(l) == 0 && chance(r, 50) {
		return nil
	}
	return l
}

func randomPod(r *rand.Rand, name, ns string) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: randomLabels(r, podLabelKeys(), podLabelValues())},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	switch n := r.IntN(100); {
	case n < 10:
		p.Status.Phase = corev1.PodPending
	case n < 13:
		p.Status.Phase = corev1.PodSucceeded
	case n < 15:
		p.Status.Phase = corev1.PodFailed
	}
	if chance(r, 4) {
		p.Spec.HostNetwork = true
	}
	if chance(r, 4) {
		p.DeletionTimestamp = ptr(metav1.NewTime(time.Unix(1700000000, 0).UTC()))
	}
	var ips []string
	switch n := r.IntN(100); {
	case n < 40:
		ips = []string{podAddr(r, 4).String()}
	case n < 60:
		ips = []string{podAddr(r, 6).String()}
	case n < 95:
		ips = []string{podAddr(r, 4).String(), podAddr(r, 6).String()}
	} // else: no IP yet
	if len(ips) > 0 && chance(r, 5) {
		// As a v4-mapped v6 string: the same pod address.
		if a := netip.MustParseAddr(ips[0]); a.Is4() {
			ips[0] = netip.AddrFrom16(a.As16()).String()
		}
	}
	if len(ips) > 0 {
		if chance(r, 15) {
			p.Status.PodIP = ips[0] // older kubelets: podIP only
		} else {
			for _, ip := range ips {
				p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
			}
			p.Status.PodIP = ips[0]
		}
	}
	for c := range 1 + r.IntN(2) {
		ctr := corev1.Container{Name: fmt.Sprintf("c%d", c), Image: "x"}
		for range r.IntN(3) {
			cp := corev1.ContainerPort{ContainerPort: pick(r, portNumbers())}
			if chance(r, 80) {
				cp.Name = pick(r, portNames())
			}
			if chance(r, 60) {
				cp.Protocol = pick(r, protocols())
			}
			ctr.Ports = append(ctr.Ports, cp)
		}
		p.Spec.Containers = append(p.Spec.Containers, ctr)
	}
	return p
}

// randomSelector returns a selector: empty, matchLabels, matchExpressions
// or both, over keys and values of the pools (values sometimes absent
// from every object).
func randomSelector(r *rand.Rand, keys []string, values map[string][]string) metav1.LabelSelector {
	var sel metav1.LabelSelector
	value := func(k string) string {
		if chance(r, 10) {
			return "none"
		}
		return pick(r, values[k])
	}
	if chance(r, 25) {
		return sel
	}
	if chance(r, 55) {
		sel.MatchLabels = map[string]string{}
		for range 1 + r.IntN(2) {
			k := pick(r, keys)
			sel.MatchLabels[k] = value(k)
		}
	}
	if sel.MatchLabels == nil || chance(r, 30) {
		for range 1 + r.IntN(2) {
			k := pick(r, keys)
			req := metav1.LabelSelectorRequirement{Key: k}
			switch r.IntN(4) {
			case 0:
				req.Operator = metav1.LabelSelectorOpIn
			case 1:
				req.Operator = metav1.LabelSelectorOpNotIn
			case 2:
				req.Operator = metav1.LabelSelectorOpExists
			case 3:
				req.Operator = metav1.LabelSelectorOpDoesNotExist
			}
			if req.Operator == metav1.LabelSelectorOpIn || req.Operator == metav1.LabelSelectorOpNotIn {
				for range 1 + r.IntN(2) {
					req.Values = append(req.Values, value(k))
				}
			}
			sel.MatchExpressions = append(sel.MatchExpressions, req)
		}
	}
	return sel
}

func randomPolicy(r *rand.Rand, name, ns string, s *cluster.Snapshot) networkingv1.NetworkPolicy {
	np := networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
	}
	if chance(r, 85) {
		// else: empty, all pods of the namespace
		np.Spec.PodSelector = randomSelector(r, podLabelKeys(), podLabelValues())
	}
	switch r.IntN(10) {
	case 0, 1, 2, 3: // absent: defaulted
	case 4, 5:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 6, 7:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 8:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	case 9:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
	}
	// A pool of ipBlocks per policy so that peers overlap.
	var blocks []networkingv1.IPBlock
	for range 1 + r.IntN(3) {
		blocks = append(blocks, randomIPBlock(r, s))
	}
	if chance(r, 70) {
		for range r.IntN(4) {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: randomPeers(r, blocks), Ports: randomPorts(r)})
		}
	}
	if chance(r, 60) {
		for range r.IntN(4) {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: randomPeers(r, blocks), Ports: randomPorts(r)})
		}
	}
	return np
}

func randomPeers(r *rand.Rand, blocks []networkingv1.IPBlock) []networkingv1.NetworkPolicyPeer {
	if chance(r, 25) {
		if chance(r, 50) {
			return []networkingv1.NetworkPolicyPeer{}
		}
		return nil
	}
	var peers []networkingv1.NetworkPolicyPeer
	for range 1 + r.IntN(3) {
		var peer networkingv1.NetworkPolicyPeer
		switch r.IntN(10) {
		case 0, 1, 2, 3, 4:
			b := pick(r, blocks)
			peer.IPBlock = b.DeepCopy()
		case 5, 6:
			peer.PodSelector = ptr(randomSelector(r, podLabelKeys(), podLabelValues()))
		case 7:
			peer.NamespaceSelector = ptr(randomSelector(r, nsSelectorKeys(), nsSelectorValues()))
		default:
			peer.PodSelector = ptr(randomSelector(r, podLabelKeys(), podLabelValues()))
			peer.NamespaceSelector = ptr(randomSelector(r, nsSelectorKeys(), nsSelectorValues()))
		}
		peers = append(peers, peer)
	}
	return peers
}

// randomIPBlock returns a CIDR around an interesting address (a pod's, an
// outside one, the family's zero) with excepts strictly inside it.
func randomIPBlock(r *rand.Rand, s *cluster.Snapshot) networkingv1.IPBlock {
	var base netip.Addr
	switch n := r.IntN(10); {
	case n < 5:
		base = podAddr(r, pick(r, []int{4, 6}))
		if ips := podIPs(s); len(ips) > 0 && chance(r, 50) {
			base = pick(r, ips)
		}
	case n < 8:
		base = pick(r, outsideAddrs())
	case n < 9:
		base = netip.IPv4Unspecified()
	default:
		base = netip.IPv6Unspecified()
	}
	var bits int
	if base.Is4() {
		bits = pick(r, []int{0, 8, 15, 16, 23, 24, 28, 29, 30, 31, 32})
	} else {
		bits = pick(r, []int{0, 8, 16, 32, 48, 63, 64, 120, 124, 125, 126, 127, 128})
	}
	cidr := netip.PrefixFrom(base, bits).Masked()
	b := networkingv1.IPBlock{CIDR: cidr.String()}
	if chance(r, 5) && bits > 0 {
		// Non-canonical: host bits set (the API accepts it; the prefix is
		// what counts).
		b.CIDR = netip.PrefixFrom(base, bits).String()
	}
	if bits < base.BitLen() && chance(r, 60) {
		for range 1 + r.IntN(3) {
			eBits := bits + 1 + r.IntN(min(base.BitLen()-bits, 12))
			if chance(r, 30) {
				eBits = base.BitLen()
			}
			inner := netip.PrefixFrom(randomAddrIn(r, cidr, s), eBits)
			if chance(r, 95) {
				inner = inner.Masked()
			}
			b.Except = append(b.Except, inner.String())
		}
	}
	if base.Is4() && len(b.Except) == 0 && chance(r, 3) {
		// A v4-mapped v6 cidr: a v6 cidr, which no v4 address is in.
		b.CIDR = netip.PrefixFrom(netip.AddrFrom16(cidr.Addr().As16()), 96+bits).String()
	}
	return b
}

// randomAddrIn returns an address of p: a pod's in it, its first or last,
// or one near a random offset.
func randomAddrIn(r *rand.Rand, p netip.Prefix, s *cluster.Snapshot) netip.Addr {
	var in []netip.Addr
	for _, a := range podIPs(s) {
		if p.Contains(a) {
			in = append(in, a)
		}
	}
	for _, a := range podBases() {
		if p.Contains(a) {
			in = append(in, a)
		}
	}
	if len(in) > 0 && chance(r, 60) {
		return pick(r, in)
	}
	if chance(r, 50) {
		return p.Masked().Addr()
	}
	return LastAddr(p)
}

// LastAddr is the last address of a prefix.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// podIPs are the addresses the snapshot's pods report (whether or not the
// pods take part).
func podIPs(s *cluster.Snapshot) []netip.Addr {
	var out []netip.Addr
	for _, p := range s.Pods {
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				out = append(out, a.Unmap())
			}
		}
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func randomPorts(r *rand.Rand) []networkingv1.NetworkPolicyPort {
	if chance(r, 35) {
		if chance(r, 50) {
			return []networkingv1.NetworkPolicyPort{}
		}
		return nil
	}
	var ports []networkingv1.NetworkPolicyPort
	for range 1 + r.IntN(3) {
		var p networkingv1.NetworkPolicyPort
		if chance(r, 60) {
			p.Protocol = ptr(pick(r, protocols()))
		}
		switch n := r.IntN(10); {
		case n < 2: // protocol only
		case n < 6:
			p.Port = ptr(intstr.FromInt32(pick(r, portNumbers())))
		case n < 8:
			from := pick(r, portNumbers())
			p.Port = ptr(intstr.FromInt32(from))
			end := min(from+int32(r.IntN(12)), 65535)
			if chance(r, 15) {
				end = 65535
			}
			p.EndPort = ptr(end)
		default:
			p.Port = ptr(intstr.FromString(pick(r, portNames())))
		}
		ports = append(ports, p)
	}
	return ports
}

// breakPolicy makes np invalid in one of the ways cluster.Validate
// rejects: some leave it isolating (fail closed), some make it ignored.
func breakPolicy(r *rand.Rand, np *networkingv1.NetworkPolicy) {
	badIn := func(f func(*networkingv1.NetworkPolicyIngressRule)) {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
		f(&np.Spec.Ingress[len(np.Spec.Ingress)-1])
	}
	switch r.IntN(10) {
	case 0: // invalid podSelector: ignored
		np.Spec.PodSelector.MatchExpressions = append(np.Spec.PodSelector.MatchExpressions, metav1.LabelSelectorRequirement{Key: "app", Operator: metav1.LabelSelectorOpIn})
	case 1: // unknown policyType: ignored
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, "Sideways")
	case 2: // except outside the cidr: isolates
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24", Except: []string{"10.0.1.0/28"}}}}
		})
	case 3: // port 0
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.Ports = []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(0))}}
		})
	case 4: // endPort below port
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(80)), EndPort: ptr[int32](79)}}})
	case 5: // protocol ICMP
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.Ports = []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.Protocol("ICMP"))}}
		})
	case 6: // ipBlock with a selector
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}, PodSelector: &metav1.LabelSelector{}}}
		})
	case 7: // empty peer
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{}}})
	case 8: // bad cidr
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}
		})
	case 9: // named port with endPort
		badIn(func(rule *networkingv1.NetworkPolicyIngressRule) {
			rule.Ports = []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http")), EndPort: ptr[int32](90)}}
		})
	}
}

func randomService(r *rand.Rand, name, ns string, s *cluster.Snapshot) corev1.Service {
	svc := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	switch r.IntN(10) {
	case 0:
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	case 1:
		svc.Spec.Type = corev1.ServiceTypeNodePort
	}
	for range 1 + r.IntN(2) {
		var ing corev1.LoadBalancerIngress
		switch n := r.IntN(10); {
		case n < 4:
			ing.IP = pick(r, []string{"203.0.113.10", "203.0.113.11", "2001:db8:100::1", "::ffff:203.0.113.12"})
		case n < 7:
			ing.IP = pick(r, outsideAddrs()).String()
		case n < 9:
			if ips := podIPs(s); len(ips) > 0 {
				ing.IP = pick(r, ips).String()
			} else {
				ing.IP = podAddr(r, 4).String()
			}
		default:
			ing.Hostname = "lb.example.com"
		}
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, ing)
	}
	for i := range 1 + r.IntN(3) {
		sp := corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: pick(r, portNumbers())}
		if chance(r, 60) {
			sp.Protocol = pick(r, protocols())
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

// Config returns a valid configuration with random defaults, cluster
// interfaces (exact and wildcard), load-balancer ingress, NAT and logging.
func Config(r *rand.Rand) config.Config {
	c := config.Defaults()
	c.ClusterInterfaces = pick(r, [][]string{{"cluster0"}, {"vlan*"}, {"cluster0", "vlan*"}, {"eth1", "br-c*"}, {"vlan1", "vlan*"}})
	c.DefaultEgress = pick(r, []config.Verdict{config.Allow, config.Deny})
	c.DefaultIngress = pick(r, []config.Verdict{config.Allow, config.Deny})
	c.LoadBalancerIngress = chance(r, 50)
	c.Masquerade = chance(r, 30)
	if chance(r, 20) {
		c.SNATv4 = netip.MustParseAddr("192.0.2.254")
	}
	if chance(r, 20) {
		c.SNATv6 = netip.MustParseAddr("2001:db8::fe")
	}
	c.LogDrops = chance(r, 30)
	return c
}
