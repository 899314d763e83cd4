// Package oracle is anvil-firewall's reference evaluator: the
// networking.k8s.io/v1 NetworkPolicy semantics, as they apply to traffic
// crossing a firewall between the cluster and the outside, written as plain
// loops over policies and pods. It knows nothing of nftables, sets or
// chains, so that it can judge the compiler (firewall/compile) and the
// kernel's verdicts in tests. The predicates it is built from (direction,
// selectsPod, peerMatches, portMatches, lbAllows) are pure and tested one
// by one, after kubernetes-sigs/kube-network-policies' PolicyEvaluator.
package oracle

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

// IP protocol numbers of the protocols a NetworkPolicy port can name.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// Direction is how a forwarded packet crosses the firewall.
type Direction int

const (
	// NotCrossing is traffic within the cluster side or within the
	// outside: policies do not judge it.
	NotCrossing Direction = iota
	// Egress leaves the cluster: in on a cluster interface, out on
	// another.
	Egress
	// Ingress enters the cluster: out on a cluster interface, in on
	// another.
	Ingress
)

func (d Direction) String() string {
	switch d {
	case Egress:
		return "egress"
	case Ingress:
		return "ingress"
	}
	return "not crossing"
}

// Evaluate reports whether the firewall accepts p, the first packet of a
// connection, given the cluster's state s and the configuration cfg.
func Evaluate(s cluster.Snapshot, cfg config.Config, p model.Packet) bool {
	return New(s, cfg).Decide(p).Allow
}

// Evaluator evaluates packets against one snapshot; New does the input
// normalisation once.
type Evaluator struct {
	cfg      config.Config
	pods     []cluster.Pod
	nsLabels map[string]map[string]string
	policies []policy
	services []corev1.Service
}

// policy is a NetworkPolicy that takes part: valid, or invalid but still
// isolating (then it allows nothing).
type policy struct {
	np       *networkingv1.NetworkPolicy
	ingress  bool // effective policyTypes
	egress   bool
	failShut bool // invalid: isolates, allows nothing
}

// New normalises s (which pods take part, namespace labels, policyTypes
// defaulting, validity) for cfg.
func New(s cluster.Snapshot, cfg config.Config) *Evaluator {
	e := &Evaluator{
		cfg:      cfg,
		pods:     cluster.Pods(s),
		nsLabels: cluster.NamespaceLabels(s),
		services: s.Services,
	}
	for i := range s.Policies {
		np := &s.Policies[i]
		failShut := false
		if err := cluster.Validate(np); err != nil {
			var pe *cluster.PolicyError
			if !errors.As(err, &pe) || !pe.Isolates {
				continue // ignored entirely
			}
			failShut = true
		}
		in, eg := cluster.Types(np)
		e.policies = append(e.policies, policy{np: np, ingress: in, egress: eg, failShut: failShut})
	}
	return e
}

// Decision is a verdict with the reason for it, for test failure messages.
type Decision struct {
	Allow     bool
	Direction Direction
	Reason    string
}

// Decide judges p.
func (e *Evaluator) Decide(p model.Packet) Decision {
	d := Decision{Direction: direction(e.cfg.ClusterInterfaces, p.Iif, p.Oif)}
	switch d.Direction {
	case Egress:
		d.Allow, d.Reason = e.decideEgress(p)
	case Ingress:
		d.Allow, d.Reason = e.decideIngress(p)
	default:
		d.Allow, d.Reason = true, fmt.Sprintf("not crossing (iif %q, oif %q)", p.Iif, p.Oif)
	}
	return d
}

func (e *Evaluator) decideEgress(p model.Packet) (bool, string) {
	src := podOwning(e.pods, p.Src)
	if src == nil {
		return e.cfg.DefaultEgress == config.Allow, fmt.Sprintf("egress: source %s is not a pod: default %s", p.Src, e.cfg.DefaultEgress)
	}
	var isolating []string
	for _, pol := range e.policies {
		if !pol.egress || !selectsPod(pol.np, src) {
			continue
		}
		isolating = append(isolating, cluster.Ref(pol.np.ObjectMeta))
		if pol.failShut {
			continue
		}
		for i, r := range pol.np.Spec.Egress {
			if peersMatch(pol.np.Namespace, r.To, p.Dst, e.pods, e.nsLabels) &&
				portsMatch(r.Ports, p.Proto, p.DstPort, podOwning(e.pods, p.Dst)) {
				return true, fmt.Sprintf("egress from pod %s/%s: allowed by %s egress[%d]", src.Namespace, src.Name, cluster.Ref(pol.np.ObjectMeta), i)
			}
		}
	}
	if len(isolating) == 0 {
		return e.cfg.DefaultEgress == config.Allow, fmt.Sprintf("egress from pod %s/%s: no egress policy selects it: default %s", src.Namespace, src.Name, e.cfg.DefaultEgress)
	}
	return false, fmt.Sprintf("egress from pod %s/%s: isolated by %s, no rule allows", src.Namespace, src.Name, strings.Join(isolating, ", "))
}

func (e *Evaluator) decideIngress(p model.Packet) (bool, string) {
	if dst := podOwning(e.pods, p.Dst); dst != nil {
		var isolating []string
		for _, pol := range e.policies {
			if !pol.ingress || !selectsPod(pol.np, dst) {
				continue
			}
			isolating = append(isolating, cluster.Ref(pol.np.ObjectMeta))
			if pol.failShut {
				continue
			}
			for i, r := range pol.np.Spec.Ingress {
				if peersMatch(pol.np.Namespace, r.From, p.Src, e.pods, e.nsLabels) &&
					portsMatch(r.Ports, p.Proto, p.DstPort, dst) {
					return true, fmt.Sprintf("ingress to pod %s/%s: allowed by %s ingress[%d]", dst.Namespace, dst.Name, cluster.Ref(pol.np.ObjectMeta), i)
				}
			}
		}
		if len(isolating) > 0 {
			return false, fmt.Sprintf("ingress to pod %s/%s: isolated by %s, no rule allows", dst.Namespace, dst.Name, strings.Join(isolating, ", "))
		}
	}
	if e.cfg.LoadBalancerIngress {
		if svc := lbAllows(e.services, p.Dst, p.Proto, p.DstPort); svc != "" {
			return true, fmt.Sprintf("ingress to %s: load balancer of service %s", p.Dst, svc)
		}
	}
	return e.cfg.DefaultIngress == config.Allow, fmt.Sprintf("ingress to %s: no ingress policy selects it: default %s", p.Dst, e.cfg.DefaultIngress)
}

// direction classifies a packet by its interfaces.
func direction(clusterIfs []string, iif, oif string) Direction {
	in, out := isCluster(clusterIfs, iif), isCluster(clusterIfs, oif)
	switch {
	case in && !out:
		return Egress
	case out && !in:
		return Ingress
	}
	return NotCrossing
}

// isCluster tells whether name is one of the cluster interfaces; a
// trailing "*" in a configured name matches every name with that prefix.
func isCluster(clusterIfs []string, name string) bool {
	for _, c := range clusterIfs {
		if prefix, wild := strings.CutSuffix(c, "*"); wild {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if c == name {
			return true
		}
	}
	return false
}

// podOwning returns the pod that owns addr, or nil. Packet addresses are
// taken as they are: a v6 packet to ::ffff:10.0.0.1 is not for the pod at
// 10.0.0.1 (pod IPs are unmapped by cluster.Pods; v4 packets carry v4
// addresses).
func podOwning(pods []cluster.Pod, addr netip.Addr) *cluster.Pod {
	for i := range pods {
		for _, ip := range pods[i].IPs {
			if ip == addr {
				return &pods[i]
			}
		}
	}
	return nil
}

// selectorMatches applies a label selector as the API does; a nil or
// invalid selector matches nothing.
func selectorMatches(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

// selectsPod tells whether the policy applies to pod: same namespace, and
// its podSelector matches the pod's labels.
func selectsPod(np *networkingv1.NetworkPolicy, pod *cluster.Pod) bool {
	return np.Namespace == pod.Namespace && selectorMatches(&np.Spec.PodSelector, pod.Labels)
}

// peersMatch tells whether addr is one of the peers; no peers means every
// address.
func peersMatch(policyNS string, peers []networkingv1.NetworkPolicyPeer, addr netip.Addr, pods []cluster.Pod, nsLabels map[string]map[string]string) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		if peerMatches(policyNS, peer, addr, pods, nsLabels) {
			return true
		}
	}
	return false
}

// peerMatches tells whether addr is the peer: in its ipBlock (and none of
// that block's excepts), or an IP of a pod its selectors choose.
func peerMatches(policyNS string, peer networkingv1.NetworkPolicyPeer, addr netip.Addr, pods []cluster.Pod, nsLabels map[string]map[string]string) bool {
	if peer.IPBlock != nil {
		return ipBlockMatches(peer.IPBlock, addr)
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return false
	}
	q := podOwning(pods, addr)
	if q == nil {
		return false
	}
	if peer.NamespaceSelector == nil {
		if q.Namespace != policyNS {
			return false
		}
	} else if !selectorMatches(peer.NamespaceSelector, nsLabels[q.Namespace]) {
		return false
	}
	return peer.PodSelector == nil || selectorMatches(peer.PodSelector, q.Labels)
}

// ipBlockMatches tells whether addr is in b's cidr and in none of its
// excepts. Families never mix: a v4 cidr does not contain a v6 address,
// and a v4-mapped v6 cidr (::ffff:10.0.0.0/104) is a v6 one.
func ipBlockMatches(b *networkingv1.IPBlock, addr netip.Addr) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Contains(addr) {
		return false
	}
	for _, ex := range b.Except {
		e, err := netip.ParsePrefix(ex)
		if err == nil && e.Contains(addr) {
			return false
		}
	}
	return true
}

// protoNumber maps a policy or container port protocol to its IP protocol
// number; nil and "" mean TCP.
func protoNumber(p *corev1.Protocol) uint8 {
	if p == nil {
		return protoTCP
	}
	switch *p {
	case "", corev1.ProtocolTCP:
		return protoTCP
	case corev1.ProtocolUDP:
		return protoUDP
	case corev1.ProtocolSCTP:
		return protoSCTP
	}
	return 0 // never a valid policy
}

// portsMatch tells whether (proto, dport) at a destination owned by dst
// (nil: not a pod) is one of ports; no ports means every protocol and port.
func portsMatch(ports []networkingv1.NetworkPolicyPort, proto uint8, dport uint16, dst *cluster.Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, port := range ports {
		if portMatches(port, proto, dport, dst) {
			return true
		}
	}
	return false
}

// portMatches tells whether one policy port entry admits (proto, dport) at
// a destination owned by dst (nil: not a pod). A named port is looked up in
// dst's container ports.
func portMatches(port networkingv1.NetworkPolicyPort, proto uint8, dport uint16, dst *cluster.Pod) bool {
	if protoNumber(port.Protocol) != proto {
		return false
	}
	if port.Port == nil {
		return true
	}
	if port.Port.Type == intstr.String {
		if dst == nil {
			return false
		}
		for _, cp := range dst.Ports {
			cpProto := cp.Protocol
			if cp.Name == port.Port.StrVal && protoNumber(&cpProto) == proto && int(cp.ContainerPort) == int(dport) {
				return true
			}
		}
		return false
	}
	from := int(port.Port.IntVal)
	to := from
	if port.EndPort != nil {
		to = int(*port.EndPort)
	}
	return from <= int(dport) && int(dport) <= to
}

// lbAllows returns the namespace/name of a Service of type LoadBalancer
// that has addr as an ingress IP and (proto, dport) as one of its ports,
// or "".
func lbAllows(services []corev1.Service, addr netip.Addr, proto uint8, dport uint16) string {
	for _, svc := range services {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		hasIP := false
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil && a.Unmap() == addr {
				hasIP = true
			}
		}
		if !hasIP {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			spProto := sp.Protocol
			if protoNumber(&spProto) == proto && int(sp.Port) == int(dport) {
				return cluster.Ref(svc.ObjectMeta)
			}
		}
	}
	return ""
}
