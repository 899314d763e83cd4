package policygen

import (
	"maps"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/anvil-metal/anvil/firewall/cluster"
)

// Shrink reduces s while fails(s) holds, one removal at a time (an
// object, a rule, a peer, a port, an except, a label, a policyType...),
// until no single removal keeps it failing. Removals are tried in a fixed
// order, so with a deterministic fails the result is too; s itself is not
// modified.
func Shrink(s cluster.Snapshot, fails func(cluster.Snapshot) bool) cluster.Snapshot {
	s = deepCopy(s)
	for {
		smaller := false
		for _, c := range candidates(s) {
			if fails(c) {
				s, smaller = c, true
				break
			}
		}
		if !smaller {
			return s
		}
	}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func deepCopy(s cluster.Snapshot) cluster.Snapshot {
	var c cluster.Snapshot
	for _, o := range s.Policies {
		c.Policies = append(c.Policies, *o.DeepCopy())
	}
	for _, o := range s.Pods {
		c.Pods = append(c.Pods, *o.DeepCopy())
	}
	for _, o := range s.Namespaces {
		c.Namespaces = append(c.Namespaces, *o.DeepCopy())
	}
	for _, o := range s.Services {
		c.Services = append(c.Services, *o.DeepCopy())
	}
	return c
}

func without[T any](s []T, i int) []T {
	out := make([]T, 0, len(s)-1)
	out = append(out, s[:i]...)
	return append(out, s[i+1:]...)
}

// candidates lists every snapshot one removal smaller than s, bigger
// steps first.
func candidates(s cluster.Snapshot) []cluster.Snapshot {
	var out []cluster.Snapshot
	edit := func(f func(c *cluster.Snapshot)) {
		c := deepCopy(s)
		f(&c)
		out = append(out, c)
	}
	for i := range s.Policies {
		edit(func(c *cluster.Snapshot) { c.Policies = without(c.Policies, i) })
	}
	for i := range s.Pods {
		edit(func(c *cluster.Snapshot) { c.Pods = without(c.Pods, i) })
	}
	for i := range s.Services {
		edit(func(c *cluster.Snapshot) { c.Services = without(c.Services, i) })
	}
	for i := range s.Namespaces {
		edit(func(c *cluster.Snapshot) { c.Namespaces = without(c.Namespaces, i) })
	}
	for i, np := range s.Policies {
		pol := func(f func(np *networkingv1.NetworkPolicy)) {
			edit(func(c *cluster.Snapshot) { f(&c.Policies[i]) })
		}
		for j := range np.Spec.Ingress {
			pol(func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress = without(np.Spec.Ingress, j) })
		}
		for j := range np.Spec.Egress {
			pol(func(np *networkingv1.NetworkPolicy) { np.Spec.Egress = without(np.Spec.Egress, j) })
		}
		for j := range np.Spec.PolicyTypes {
			pol(func(np *networkingv1.NetworkPolicy) { np.Spec.PolicyTypes = without(np.Spec.PolicyTypes, j) })
		}
		selectorEdits(np.Spec.PodSelector, func(f func(*metav1.LabelSelector)) {
			pol(func(np *networkingv1.NetworkPolicy) { f(&np.Spec.PodSelector) })
		})
		for j, rule := range np.Spec.Ingress {
			ruleEdits(rule.From, rule.Ports, func(f func(*[]networkingv1.NetworkPolicyPeer, *[]networkingv1.NetworkPolicyPort)) {
				pol(func(np *networkingv1.NetworkPolicy) { f(&np.Spec.Ingress[j].From, &np.Spec.Ingress[j].Ports) })
			})
		}
		for j, rule := range np.Spec.Egress {
			ruleEdits(rule.To, rule.Ports, func(f func(*[]networkingv1.NetworkPolicyPeer, *[]networkingv1.NetworkPolicyPort)) {
				pol(func(np *networkingv1.NetworkPolicy) { f(&np.Spec.Egress[j].To, &np.Spec.Egress[j].Ports) })
			})
		}
	}
	for i, p := range s.Pods {
		for _, k := range sortedKeys(p.Labels) {
			edit(func(c *cluster.Snapshot) { delete(c.Pods[i].Labels, k) })
		}
		for j := range p.Status.PodIPs {
			edit(func(c *cluster.Snapshot) { c.Pods[i].Status.PodIPs = without(c.Pods[i].Status.PodIPs, j) })
		}
		if p.Status.PodIP != "" {
			edit(func(c *cluster.Snapshot) { c.Pods[i].Status.PodIP = "" })
		}
		for j, ctr := range p.Spec.Containers {
			if len(p.Spec.Containers) > 1 {
				edit(func(c *cluster.Snapshot) { c.Pods[i].Spec.Containers = without(c.Pods[i].Spec.Containers, j) })
			}
			for k := range ctr.Ports {
				edit(func(c *cluster.Snapshot) {
					c.Pods[i].Spec.Containers[j].Ports = without(c.Pods[i].Spec.Containers[j].Ports, k)
				})
			}
		}
	}
	for i, n := range s.Namespaces {
		for _, k := range sortedKeys(n.Labels) {
			edit(func(c *cluster.Snapshot) { delete(c.Namespaces[i].Labels, k) })
		}
	}
	for i, svc := range s.Services {
		for j := range svc.Spec.Ports {
			edit(func(c *cluster.Snapshot) { c.Services[i].Spec.Ports = without(c.Services[i].Spec.Ports, j) })
		}
		for j := range svc.Status.LoadBalancer.Ingress {
			edit(func(c *cluster.Snapshot) {
				c.Services[i].Status.LoadBalancer.Ingress = without(c.Services[i].Status.LoadBalancer.Ingress, j)
			})
		}
	}
	return out
}

func selectorEdits(sel metav1.LabelSelector, edit func(func(*metav1.LabelSelector))) {
	for _, k := range sortedKeys(sel.MatchLabels) {
		edit(func(s *metav1.LabelSelector) { delete(s.MatchLabels, k) })
	}
	for j, req := range sel.MatchExpressions {
		edit(func(s *metav1.LabelSelector) { s.MatchExpressions = without(s.MatchExpressions, j) })
		for v := range req.Values {
			if len(req.Values) > 1 {
				edit(func(s *metav1.LabelSelector) {
					s.MatchExpressions[j].Values = without(s.MatchExpressions[j].Values, v)
				})
			}
		}
	}
}

func ruleEdits(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, edit func(func(*[]networkingv1.NetworkPolicyPeer, *[]networkingv1.NetworkPolicyPort))) {
	for k := range peers {
		edit(func(peers *[]networkingv1.NetworkPolicyPeer, _ *[]networkingv1.NetworkPolicyPort) {
			*peers = without(*peers, k)
		})
	}
	for k := range ports {
		edit(func(_ *[]networkingv1.NetworkPolicyPeer, ports *[]networkingv1.NetworkPolicyPort) {
			*ports = without(*ports, k)
		})
	}
	for k, peer := range peers {
		peerEdit := func(f func(*networkingv1.NetworkPolicyPeer)) {
			edit(func(peers *[]networkingv1.NetworkPolicyPeer, _ *[]networkingv1.NetworkPolicyPort) { f(&(*peers)[k]) })
		}
		if peer.IPBlock != nil {
			for m := range peer.IPBlock.Except {
				peerEdit(func(p *networkingv1.NetworkPolicyPeer) { p.IPBlock.Except = without(p.IPBlock.Except, m) })
			}
		}
		if peer.PodSelector != nil && peer.NamespaceSelector != nil {
			peerEdit(func(p *networkingv1.NetworkPolicyPeer) { p.PodSelector = nil })
			peerEdit(func(p *networkingv1.NetworkPolicyPeer) { p.NamespaceSelector = nil })
		}
		for _, sel := range []struct {
			s   *metav1.LabelSelector
			get func(*networkingv1.NetworkPolicyPeer) *metav1.LabelSelector
		}{
			{peer.PodSelector, func(p *networkingv1.NetworkPolicyPeer) *metav1.LabelSelector { return p.PodSelector }},
			{peer.NamespaceSelector, func(p *networkingv1.NetworkPolicyPeer) *metav1.LabelSelector { return p.NamespaceSelector }},
		} {
			if sel.s == nil {
				continue
			}
			selectorEdits(*sel.s, func(f func(*metav1.LabelSelector)) {
				peerEdit(func(p *networkingv1.NetworkPolicyPeer) { f(sel.get(p)) })
			})
		}
	}
	for k, port := range ports {
		portEdit := func(f func(*networkingv1.NetworkPolicyPort)) {
			edit(func(_ *[]networkingv1.NetworkPolicyPeer, ports *[]networkingv1.NetworkPolicyPort) { f(&(*ports)[k]) })
		}
		if port.EndPort != nil {
			portEdit(func(p *networkingv1.NetworkPolicyPort) { p.EndPort = nil })
		}
		if port.Protocol != nil {
			portEdit(func(p *networkingv1.NetworkPolicyPort) { p.Protocol = nil })
		}
	}
}
