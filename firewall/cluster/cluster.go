// Package cluster is the input anvil-firewall works from: a snapshot of the
// cluster's NetworkPolicies, Pods, Namespaces and Services
// (networking.k8s.io/v1, core/v1), and the input normalisation the compiler
// and the reference evaluator share: which pods take part (and own which
// IPs), the API's policyTypes defaulting, and validation of a policy. The
// semantics of policies live in the compiler and, independently, in the
// oracle; not here.
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Snapshot is the state of the cluster at one moment. Order does not
// matter: the compiler's output is the same for any order.
type Snapshot struct {
	Policies   []networkingv1.NetworkPolicy
	Pods       []corev1.Pod
	Namespaces []corev1.Namespace
	Services   []corev1.Service
}

// Pod is a pod that takes part in policy: running or pending, not on the
// host network, with at least one IP.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	IPs             []netip.Addr // unmapped; those this pod owns (see Pods)
	Ports           []corev1.ContainerPort
}

// Pods returns the pods that take part in policy, sorted by namespace and
// name. Each IP belongs to one pod only: when two pods claim the same IP
// (a stale pod beside its successor), the first in that order keeps it.
func Pods(s Snapshot) []Pod {
	src := make([]corev1.Pod, 0, len(s.Pods))
	for _, p := range s.Pods {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		src = append(src, p)
	}
	sort.Slice(src, func(i, j int) bool {
		if src[i].Namespace != src[j].Namespace {
			return src[i].Namespace < src[j].Namespace
		}
		return src[i].Name < src[j].Name
	})
	owned := map[netip.Addr]bool{}
	var out []Pod
	for _, p := range src {
		var ips []netip.Addr
		add := func(s string) {
			a, err := netip.ParseAddr(s)
			if err != nil || owned[a.Unmap()] {
				return
			}
			a = a.Unmap()
			owned[a] = true
			ips = append(ips, a)
		}
		for _, ip := range p.Status.PodIPs {
			add(ip.IP)
		}
		add(p.Status.PodIP)
		if len(ips) == 0 {
			continue
		}
		var ports []corev1.ContainerPort
		for _, c := range p.Spec.Containers {
			ports = append(ports, c.Ports...)
		}
		out = append(out, Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IPs: ips, Ports: ports})
	}
	return out
}

// NamespaceLabels maps each namespace to its labels. A namespace a pod
// names but the snapshot lacks has no labels (it matches only empty
// selectors).
func NamespaceLabels(s Snapshot) map[string]map[string]string {
	m := make(map[string]map[string]string, len(s.Namespaces))
	for _, n := range s.Namespaces {
		l := map[string]string{}
		for k, v := range n.Labels {
			l[k] = v
		}
		// As the API server does since 1.21.
		l["kubernetes.io/metadata.name"] = n.Name
		m[n.Name] = l
	}
	return m
}

// Types returns a policy's effective policyTypes, defaulted as the API
// does: Ingress always, Egress when the policy has egress rules.
func Types(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// Ref names an object in errors and metrics.
func Ref(m metav1.ObjectMeta) string { return m.Namespace + "/" + m.Name }

// ErrInvalid marks an invalid policy.
var ErrInvalid = errors.New("invalid NetworkPolicy")

// PolicyError is an invalid policy, named.
type PolicyError struct {
	Namespace, Name string
	// Isolates tells whether the policy still isolates the pods it
	// selects (its podSelector and policyTypes are valid): such a policy
	// fails closed, allowing nothing, rather than being ignored.
	Isolates bool
	Err      error
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("NetworkPolicy %s/%s: %v", e.Namespace, e.Name, e.Err)
}

func (e *PolicyError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// Validate checks a policy as the API server would, and reports every
// problem in one *PolicyError (nil when valid).
func Validate(p *networkingv1.NetworkPolicy) error {
	var head, rules []error
	if p.Namespace == "" {
		head = append(head, errors.New("no namespace"))
	}
	if _, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector); err != nil {
		head = append(head, fmt.Errorf("spec.podSelector: %w", err))
	}
	for i, t := range p.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			head = append(head, fmt.Errorf("spec.policyTypes[%d]: %q is neither Ingress nor Egress", i, t))
		}
	}
	for i, r := range p.Spec.Ingress {
		rules = append(rules, validateRule(fmt.Sprintf("spec.ingress[%d]", i), "from", r.From, r.Ports)...)
	}
	for i, r := range p.Spec.Egress {
		rules = append(rules, validateRule(fmt.Sprintf("spec.egress[%d]", i), "to", r.To, r.Ports)...)
	}
	if len(head)+len(rules) == 0 {
		return nil
	}
	return &PolicyError{Namespace: p.Namespace, Name: p.Name, Isolates: len(head) == 0, Err: errors.Join(append(head, rules...)...)}
}

func validateRule(at, peersName string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) []error {
	var errs []error
	for j, peer := range peers {
		where := fmt.Sprintf("%s.%s[%d]", at, peersName, j)
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				errs = append(errs, fmt.Errorf("%s: ipBlock cannot be combined with selectors", where))
			}
			cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.ipBlock.cidr: %w", where, err))
				continue
			}
			for k, ex := range peer.IPBlock.Except {
				e, err := netip.ParsePrefix(ex)
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("%s.ipBlock.except[%d]: %w", where, k, err))
				case e.Addr().Is4() != cidr.Addr().Is4() || e.Bits() <= cidr.Bits() || !cidr.Contains(e.Addr()):
					errs = append(errs, fmt.Errorf("%s.ipBlock.except[%d]: %s is not a strict subset of %s", where, k, ex, cidr))
				}
			}
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			errs = append(errs, fmt.Errorf("%s: must set ipBlock, podSelector or namespaceSelector", where))
		}
		for name, sel := range map[string]*metav1.LabelSelector{"podSelector": peer.PodSelector, "namespaceSelector": peer.NamespaceSelector} {
			if sel == nil {
				continue
			}
			if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
				errs = append(errs, fmt.Errorf("%s.%s: %w", where, name, err))
			}
		}
	}
	for j, port := range ports {
		where := fmt.Sprintf("%s.ports[%d]", at, j)
		if port.Protocol != nil {
			switch *port.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				errs = append(errs, fmt.Errorf("%s.protocol: %q is not TCP, UDP or SCTP", where, *port.Protocol))
			}
		}
		if port.Port == nil {
			if port.EndPort != nil {
				errs = append(errs, fmt.Errorf("%s.endPort: requires port", where))
			}
			continue
		}
		if port.Port.Type == 1 { // intstr.String: a named port
			if msgs := validation.IsValidPortName(port.Port.StrVal); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("%s.port: %q: %s", where, port.Port.StrVal, msgs[0]))
			}
			if port.EndPort != nil {
				errs = append(errs, fmt.Errorf("%s.endPort: not allowed with a named port", where))
			}
			continue
		}
		if v := port.Port.IntVal; v < 1 || v > 65535 {
			errs = append(errs, fmt.Errorf("%s.port: %d is not in 1..65535", where, v))
		}
		if port.EndPort != nil && (*port.EndPort < port.Port.IntVal || *port.EndPort > 65535) {
			errs = append(errs, fmt.Errorf("%s.endPort: %d must be in %d..65535", where, *port.EndPort, port.Port.IntVal))
		}
	}
	return errs
}
