package main

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
)

// snapshot builds a cluster with n NetworkPolicies carrying perPolicy
// CIDRs each (ipBlock cidrs and excepts, at least 5), n pods (each with an
// IPv4 and an IPv6 address and two named container ports) in n/20
// namespaces. Each policy selects the pods of one app label in its
// namespace, for both directions:
//
//   - egress to ipBlocks of its own — a /24 with an except, perPolicy-4
//     IPv4 /28s and an IPv6 /48 — on TCP 443, TCP 8000-8100 and UDP 53;
//   - egress to the pods of one app in the namespaces of one team, on the
//     named port "http";
//   - ingress from one IPv4 ipBlock of its own and from the pods of its
//     namespace, on TCP 80 and SCTP 3000-3010.
//
// Every CIDR is distinct, so the compiler cannot share the policies'
// address sets: the worst case for the applier.
func snapshot(n, perPolicy int) cluster.Snapshot {
	var s cluster.Snapshot
	nns := max(1, n/20)
	for i := range nns {
		s.Namespaces = append(s.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("ns-%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%7)},
		}})
	}
	for i := range n {
		v4 := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 14: byte(i >> 8), 15: byte(i)})
		s.Pods = append(s.Pods, corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: fmt.Sprintf("ns-%d", i%nns), Name: fmt.Sprintf("pod-%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("a%d", i%10)},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080},
				{Name: "metrics", ContainerPort: 9090},
			}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: v4.String(),
				PodIPs: []corev1.PodIP{{IP: v4.String()}, {IP: v6.String()}}},
		})
	}
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	port := func(p int) *intstr.IntOrString { v := intstr.FromInt32(int32(p)); return &v }
	end := func(p int32) *int32 { return &p }
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%nns)
		a := netip.AddrFrom4([4]byte{100, byte(64 + (i>>8)&63), byte(i), 0})
		c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)})
		d := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		peers := []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(a, 24).String(), Except: []string{netip.PrefixFrom(a.Next(), 32).String()}}},
		}
		for j := range max(perPolicy-4, 1) {
			// every other /28 of 172.16.0.0/12 (adjacent ones would be
			// merged into one range by the compiler)
			k := uint32(i*max(perPolicy-4, 1)+j) << 5
			b := netip.AddrFrom4([4]byte{172, byte(16 + k>>16&15), byte(k >> 8), byte(k)})
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(b, 28).String()}})
		}
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(c, 48).String()}})
		named := intstr.FromString("http")
		s.Policies = append(s.Policies, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol-%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%10)}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To: peers,
					Ports: []networkingv1.NetworkPolicyPort{
						{Protocol: &tcp, Port: port(443)},
						{Protocol: &tcp, Port: port(8000), EndPort: end(8100)},
						{Protocol: &udp, Port: port(53)},
					},
				}, {
					To: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%7)}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", (i+1)%10)}},
					}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &named}},
				}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{
						{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(d, 32).String()}},
						{PodSelector: &metav1.LabelSelector{}},
					},
					Ports: []networkingv1.NetworkPolicyPort{
						{Protocol: &tcp, Port: port(80)},
						{Protocol: &sctp, Port: port(3000), EndPort: end(3010)},
					},
				}},
			},
		})
	}
	return s
}

// cidrs counts the ipBlock CIDRs and excepts of a snapshot.
func cidrs(s cluster.Snapshot) int {
	n := 0
	for _, p := range s.Policies {
		count := func(peers []networkingv1.NetworkPolicyPeer) {
			for _, peer := range peers {
				if peer.IPBlock != nil {
					n += 1 + len(peer.IPBlock.Except)
				}
			}
		}
		for _, r := range p.Spec.Egress {
			count(r.To)
		}
		for _, r := range p.Spec.Ingress {
			count(r.From)
		}
	}
	return n
}
