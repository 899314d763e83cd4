package oracle

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

func ptr[T any](v T) *T { return &v }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func proto(p corev1.Protocol) *corev1.Protocol { return &p }

func numPort(p int32) *intstr.IntOrString { return ptr(intstr.FromInt32(p)) }

func namedPort(n string) *intstr.IntOrString { return ptr(intstr.FromString(n)) }

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func pod(ns, name string, lbls map[string]string, ips []string, ports ...corev1.ContainerPort) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func ns(name string, lbls map[string]string) corev1.Namespace {
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

func TestDirection(t *testing.T) {
	tests := []struct {
		ifs      []string
		iif, oif string
		want     Direction
	}{
		{[]string{"cluster0"}, "cluster0", "eth0", Egress},
		{[]string{"cluster0"}, "eth0", "cluster0", Ingress},
		{[]string{"cluster0"}, "cluster0", "cluster0", NotCrossing},
		{[]string{"cluster0"}, "eth0", "eth1", NotCrossing},
		{[]string{"cluster0"}, "cluster01", "eth0", NotCrossing}, // no implicit prefix
		{[]string{"vlan*"}, "vlan10", "eth0", Egress},
		{[]string{"vlan*"}, "vlan", "eth0", Egress}, // empty suffix matches
		{[]string{"vlan*"}, "eth0", "vlan20", Ingress},
		{[]string{"vlan*"}, "vlan10", "vlan20", NotCrossing},
		{[]string{"vlan*"}, "vla", "eth0", NotCrossing},
		{[]string{"cluster0", "vlan*"}, "cluster0", "vlan3", NotCrossing},
		{[]string{"cluster0", "vlan*"}, "vlan3", "eth0", Egress},
		{[]string{"cluster0", "vlan*"}, "eth0", "cluster0", Ingress},
	}
	for _, tt := range tests {
		if got := direction(tt.ifs, tt.iif, tt.oif); got != tt.want {
			t.Errorf("direction(%v, %q, %q) = %v, want %v", tt.ifs, tt.iif, tt.oif, got, tt.want)
		}
		cfg := config.Defaults()
		cfg.ClusterInterfaces = tt.ifs
		p := model.Packet{Iif: tt.iif, Oif: tt.oif, Src: addr("192.0.2.1"), Dst: addr("192.0.2.2"), Proto: protoTCP, DstPort: 1}
		if d := New(cluster.Snapshot{}, cfg).Decide(p); d.Direction != tt.want || !d.Allow {
			t.Errorf("Decide(%q -> %q) = %+v, want direction %v, allowed by default", tt.iif, tt.oif, d, tt.want)
		}
	}
}

func TestSelectsPod(t *testing.T) {
	p := &cluster.Pod{Namespace: "a", Name: "x", Labels: map[string]string{"app": "web", "tier": "fe"}}
	tests := []struct {
		name string
		ns   string
		sel  metav1.LabelSelector
		want bool
	}{
		{"empty selector selects all pods of the namespace", "a", metav1.LabelSelector{}, true},
		{"other namespace", "b", metav1.LabelSelector{}, false},
		{"matchLabels", "a", *sel("app", "web"), true},
		{"matchLabels mismatch", "a", *sel("app", "db"), false},
		{"matchLabels all must match", "a", *sel("app", "web", "tier", "be"), false},
		{"In", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "web"}}}}, true},
		{"NotIn", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"web"}}}}, false},
		{"NotIn absent key", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}}}}, true},
		{"Exists", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}}, true},
		{"DoesNotExist", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}}, false},
		{"labels AND expressions", "a", metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}}, false},
		{"invalid selector selects nothing", "a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: tt.ns, Name: "p"}, Spec: networkingv1.NetworkPolicySpec{PodSelector: tt.sel}}
			if got := selectsPod(np, p); got != tt.want {
				t.Errorf("selectsPod = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIPBlockMatches(t *testing.T) {
	tests := []struct {
		name  string
		block networkingv1.IPBlock
		addr  string
		want  bool
	}{
		{"in cidr", networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, "10.1.2.3", true},
		{"first address", networkingv1.IPBlock{CIDR: "10.0.0.0/24"}, "10.0.0.0", true},
		{"last address", networkingv1.IPBlock{CIDR: "10.0.0.0/24"}, "10.0.0.255", true},
		{"one past the end", networkingv1.IPBlock{CIDR: "10.0.0.0/24"}, "10.0.1.0", false},
		{"one before", networkingv1.IPBlock{CIDR: "10.0.1.0/24"}, "10.0.0.255", false},
		{"non-canonical cidr is masked", networkingv1.IPBlock{CIDR: "10.0.0.77/24"}, "10.0.0.1", true},
		{"in except", networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}, "10.1.2.3", false},
		{"except boundary inside", networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}, "10.1.255.255", false},
		{"just past except", networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}, "10.2.0.0", true},
		{"second except", networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.3.0.0/16"}}, "10.3.0.1", false},
		{"v4 cidr, v6 address", networkingv1.IPBlock{CIDR: "0.0.0.0/0"}, "fd00::1", false},
		{"v6 cidr, v4 address", networkingv1.IPBlock{CIDR: "::/0"}, "10.0.0.1", false},
		{"v6 cidr", networkingv1.IPBlock{CIDR: "2001:db8::/32", Except: []string{"2001:db8:dead::/48"}}, "2001:db8:1::1", true},
		{"v6 except", networkingv1.IPBlock{CIDR: "2001:db8::/32", Except: []string{"2001:db8:dead::/48"}}, "2001:db8:dead::1", false},
		{"4-in-6 cidr, v4 address", networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}, "10.0.0.1", false},
		{"4-in-6 cidr, v4-mapped v6 address", networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}, "::ffff:10.0.0.1", true},
		{"v4 cidr, v4-mapped v6 address", networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, "::ffff:10.0.0.1", false},
		{"all v4", networkingv1.IPBlock{CIDR: "0.0.0.0/0"}, "255.255.255.255", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ipBlockMatches(&tt.block, addr(tt.addr)); got != tt.want {
				t.Errorf("ipBlockMatches(%+v, %s) = %v, want %v", tt.block, tt.addr, got, tt.want)
			}
		})
	}
}

func TestPeerMatches(t *testing.T) {
	s := cluster.Snapshot{
		Namespaces: []corev1.Namespace{ns("a", map[string]string{"env": "prod"}), ns("b", map[string]string{"env": "dev"})},
		Pods: []corev1.Pod{
			pod("a", "web", map[string]string{"app": "web"}, []string{"10.0.0.1", "fd00::1"}),
			pod("a", "db", map[string]string{"app": "db"}, []string{"10.0.0.2"}),
			pod("b", "web", map[string]string{"app": "web"}, []string{"10.0.1.1"}),
			pod("c", "web", map[string]string{"app": "web"}, []string{"10.0.2.1"}), // namespace not in the snapshot
		},
	}
	pods, nsl := cluster.Pods(s), cluster.NamespaceLabels(s)
	prodExpr := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod", "staging"}}}}
	tests := []struct {
		name string
		peer networkingv1.NetworkPolicyPeer
		addr string
		want bool
	}{
		{"podSelector only: same namespace", networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "web")}, "10.0.0.1", true},
		{"podSelector only: second IP of the pod", networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "web")}, "fd00::1", true},
		{"podSelector only: other namespace", networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "web")}, "10.0.1.1", false},
		{"podSelector only: labels differ", networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "web")}, "10.0.0.2", false},
		{"empty podSelector: every pod of the namespace", networkingv1.NetworkPolicyPeer{PodSelector: sel()}, "10.0.0.2", true},
		{"v6 packet to a v4 pod's mapped address", networkingv1.NetworkPolicyPeer{PodSelector: sel()}, "::ffff:10.0.0.2", false},
		{"non-pod address never matches a selector", networkingv1.NetworkPolicyPeer{PodSelector: sel()}, "10.0.0.99", false},
		{"empty namespaceSelector: every namespace", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}, "10.0.1.1", true},
		{"empty namespaceSelector: namespace missing from the snapshot", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}, "10.0.2.1", true},
		{"namespaceSelector by name label", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("kubernetes.io/metadata.name", "b")}, "10.0.1.1", true},
		{"namespaceSelector matchExpressions", networkingv1.NetworkPolicyPeer{NamespaceSelector: prodExpr}, "10.0.0.2", true},
		{"namespaceSelector matchExpressions mismatch", networkingv1.NetworkPolicyPeer{NamespaceSelector: prodExpr}, "10.0.1.1", false},
		{"namespaceSelector and podSelector: both match", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("env", "dev"), PodSelector: sel("app", "web")}, "10.0.1.1", true},
		{"namespaceSelector and podSelector: pod mismatch", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("env", "prod"), PodSelector: sel("app", "web")}, "10.0.0.2", false},
		{"namespaceSelector and podSelector: namespace mismatch", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("env", "prod"), PodSelector: sel("app", "web")}, "10.0.1.1", false},
		{"ipBlock matches pod addresses too", networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}, "10.0.0.2", true},
		{"ipBlock matches non-pod addresses", networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}, "10.0.0.99", true},
		{"empty peer matches nothing", networkingv1.NetworkPolicyPeer{}, "10.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerMatches("a", tt.peer, addr(tt.addr), pods, nsl); got != tt.want {
				t.Errorf("peerMatches(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestPeersMatch(t *testing.T) {
	// Two peers; the except of the first lies inside the second's cidr.
	peers := []networkingv1.NetworkPolicyPeer{
		{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.2.0/24"}},
	}
	tests := []struct {
		peers []networkingv1.NetworkPolicyPeer
		addr  string
		want  bool
	}{
		{peers, "10.1.2.3", true},  // excepted by the first, allowed by the second
		{peers, "10.1.3.3", false}, // excepted by the first, not in the second
		{peers, "10.2.0.1", true},
		{peers, "11.0.0.0", false},
		{nil, "192.0.2.1", true}, // no peers: every address
		{[]networkingv1.NetworkPolicyPeer{}, "fd00::1", true},
	}
	for _, tt := range tests {
		if got := peersMatch("a", tt.peers, addr(tt.addr), nil, nil); got != tt.want {
			t.Errorf("peersMatch(%d peers, %s) = %v, want %v", len(tt.peers), tt.addr, got, tt.want)
		}
	}
}

func TestPortMatches(t *testing.T) {
	web := &cluster.Pod{Namespace: "a", Name: "web", Ports: []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8080},                              // protocol "" = TCP
		{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP}, // UDP only
		{Name: "assoc", ContainerPort: 3868, Protocol: corev1.ProtocolSCTP},
	}}
	tests := []struct {
		name  string
		port  networkingv1.NetworkPolicyPort
		proto uint8
		dport uint16
		dst   *cluster.Pod
		want  bool
	}{
		{"numeric, protocol nil = TCP", networkingv1.NetworkPolicyPort{Port: numPort(80)}, protoTCP, 80, nil, true},
		{"numeric, other port", networkingv1.NetworkPolicyPort{Port: numPort(80)}, protoTCP, 81, nil, false},
		{"numeric, protocol nil is not UDP", networkingv1.NetworkPolicyPort{Port: numPort(80)}, protoUDP, 80, nil, false},
		{"UDP", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: numPort(53)}, protoUDP, 53, nil, true},
		{"SCTP", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolSCTP), Port: numPort(3868)}, protoSCTP, 3868, nil, true},
		{"port without number: any TCP port", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolTCP)}, protoTCP, 65535, nil, true},
		{"port without number or protocol: any TCP port", networkingv1.NetworkPolicyPort{}, protoTCP, 1, nil, true},
		{"port without number: not another protocol", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolTCP)}, protoUDP, 1, nil, false},
		{"port without number: not ICMP", networkingv1.NetworkPolicyPort{}, 1, 0, nil, false},
		{"range: lower bound", networkingv1.NetworkPolicyPort{Port: numPort(5000), EndPort: ptr[int32](5010)}, protoTCP, 5000, nil, true},
		{"range: upper bound", networkingv1.NetworkPolicyPort{Port: numPort(5000), EndPort: ptr[int32](5010)}, protoTCP, 5010, nil, true},
		{"range: below", networkingv1.NetworkPolicyPort{Port: numPort(5000), EndPort: ptr[int32](5010)}, protoTCP, 4999, nil, false},
		{"range: above", networkingv1.NetworkPolicyPort{Port: numPort(5000), EndPort: ptr[int32](5010)}, protoTCP, 5011, nil, false},
		{"range of one", networkingv1.NetworkPolicyPort{Port: numPort(7), EndPort: ptr[int32](7)}, protoTCP, 7, nil, true},
		{"range to 65535", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: numPort(1), EndPort: ptr[int32](65535)}, protoUDP, 65535, nil, true},
		{"named: resolved on the pod", networkingv1.NetworkPolicyPort{Port: namedPort("http")}, protoTCP, 8080, web, true},
		{"named: other number", networkingv1.NetworkPolicyPort{Port: namedPort("http")}, protoTCP, 80, web, false},
		{"named: no pod at the destination", networkingv1.NetworkPolicyPort{Port: namedPort("http")}, protoTCP, 8080, nil, false},
		{"named: unknown name", networkingv1.NetworkPolicyPort{Port: namedPort("https")}, protoTCP, 8080, web, false},
		{"named UDP port, policy protocol nil = TCP", networkingv1.NetworkPolicyPort{Port: namedPort("dns")}, protoTCP, 5353, web, false},
		{"named UDP port, policy protocol UDP", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: namedPort("dns")}, protoUDP, 5353, web, true},
		{"named TCP port, policy protocol UDP", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: namedPort("http")}, protoUDP, 8080, web, false},
		{"named SCTP", networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolSCTP), Port: namedPort("assoc")}, protoSCTP, 3868, web, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := portMatches(tt.port, tt.proto, tt.dport, tt.dst); got != tt.want {
				t.Errorf("portMatches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPortsMatch(t *testing.T) {
	some := []networkingv1.NetworkPolicyPort{{Port: numPort(80)}, {Protocol: proto(corev1.ProtocolUDP), Port: numPort(53)}}
	tests := []struct {
		ports []networkingv1.NetworkPolicyPort
		proto uint8
		dport uint16
		want  bool
	}{
		{nil, 1, 0, true}, // no ports: every protocol, ICMP too
		{nil, 58, 0, true},
		{[]networkingv1.NetworkPolicyPort{}, protoSCTP, 9, true},
		{some, protoTCP, 80, true},
		{some, protoUDP, 53, true},
		{some, protoUDP, 80, false},
		{some, 1, 0, false},
	}
	for _, tt := range tests {
		if got := portsMatch(tt.ports, tt.proto, tt.dport, nil); got != tt.want {
			t.Errorf("portsMatch(%d ports, %d, %d) = %v, want %v", len(tt.ports), tt.proto, tt.dport, got, tt.want)
		}
	}
}

func TestLBAllows(t *testing.T) {
	lb := func(name string, typ corev1.ServiceType, ips []string, ports ...corev1.ServicePort) corev1.Service {
		s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name}, Spec: corev1.ServiceSpec{Type: typ, Ports: ports}}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	svcs := []corev1.Service{
		lb("web", corev1.ServiceTypeLoadBalancer, []string{"198.51.100.1", "2001:db8::10"}, corev1.ServicePort{Port: 443}, corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP}),
		lb("mapped", corev1.ServiceTypeLoadBalancer, []string{"::ffff:198.51.100.5"}, corev1.ServicePort{Port: 80}),
		lb("cip", corev1.ServiceTypeClusterIP, []string{"198.51.100.2"}, corev1.ServicePort{Port: 80}),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "host"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{Hostname: "lb.example"}}}}},
	}
	tests := []struct {
		addr  string
		proto uint8
		dport uint16
		want  string
	}{
		{"198.51.100.1", protoTCP, 443, "a/web"}, // protocol "" = TCP
		{"2001:db8::10", protoTCP, 443, "a/web"},
		{"198.51.100.1", protoUDP, 53, "a/web"},
		{"198.51.100.1", protoTCP, 53, ""},
		{"198.51.100.1", protoUDP, 443, ""},
		{"198.51.100.1", protoTCP, 80, ""},
		{"198.51.100.3", protoTCP, 443, ""},
		{"198.51.100.2", protoTCP, 80, ""}, // not of type LoadBalancer
		{"198.51.100.1", 1, 0, ""},
		{"198.51.100.5", protoTCP, 80, "a/mapped"}, // the service's IP is unmapped, as pod IPs are
		{"::ffff:198.51.100.5", protoTCP, 80, ""},  // a v6 packet
	}
	for _, tt := range tests {
		if got := lbAllows(svcs, addr(tt.addr), tt.proto, tt.dport); got != tt.want {
			t.Errorf("lbAllows(%s, %d, %d) = %q, want %q", tt.addr, tt.proto, tt.dport, got, tt.want)
		}
	}
}

// TestEvaluate checks whole decisions: the predicates combined with
// isolation, policyTypes defaulting, invalid policies and the defaults.
func TestEvaluate(t *testing.T) {
	base := cluster.Snapshot{
		Namespaces: []corev1.Namespace{ns("a", map[string]string{"env": "prod"}), ns("b", map[string]string{"env": "dev"})},
		Pods: []corev1.Pod{
			pod("a", "web", map[string]string{"app": "web"}, []string{"10.0.0.1", "fd00::1"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			pod("a", "db", map[string]string{"app": "db"}, []string{"10.0.0.2"}, corev1.ContainerPort{Name: "http", ContainerPort: 9090}),
			pod("b", "web", map[string]string{"app": "web"}, []string{"10.0.1.1"}),
		},
	}
	np := func(ns, name string, spec networkingv1.NetworkPolicySpec) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	}
	eg := func(src, dst string, pr uint8, dport uint16) model.Packet {
		return model.Packet{Iif: "cluster0", Oif: "eth0", Src: addr(src), Dst: addr(dst), Proto: pr, DstPort: dport}
	}
	in := func(src, dst string, pr uint8, dport uint16) model.Packet {
		return model.Packet{Iif: "eth0", Oif: "cluster0", Src: addr(src), Dst: addr(dst), Proto: pr, DstPort: dport}
	}
	denyAll := func(c config.Config) config.Config {
		c.DefaultEgress, c.DefaultIngress = config.Deny, config.Deny
		return c
	}
	lbOn := func(c config.Config) config.Config { c.LoadBalancerIngress = true; return c }
	webOnly := *sel("app", "web")

	type check struct {
		p    model.Packet
		want bool
	}
	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		services []corev1.Service
		cfg      func(config.Config) config.Config
		checks   []check
	}{
		{
			name: "defaults allow",
			checks: []check{
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), true},
				{in("192.0.2.1", "10.0.0.1", protoUDP, 53), true},
			},
		},
		{
			name: "defaults deny",
			cfg:  denyAll,
			checks: []check{
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), false},
				{eg("10.9.9.9", "192.0.2.1", protoTCP, 80), false}, // not a pod
				{in("192.0.2.1", "10.0.0.1", protoUDP, 53), false},
				{in("192.0.2.1", "10.9.9.9", protoUDP, 53), false},
				// not crossing: accepted whatever the defaults
				{model.Packet{Iif: "cluster0", Oif: "cluster0", Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: protoTCP, DstPort: 1}, true},
				{model.Packet{Iif: "eth0", Oif: "eth1", Src: addr("192.0.2.1"), Dst: addr("192.0.2.2"), Proto: protoTCP, DstPort: 1}, true},
			},
		},
		{
			name: "wildcard cluster interfaces",
			cfg: func(c config.Config) config.Config {
				c = denyAll(c)
				c.ClusterInterfaces = []string{"vlan*"}
				return c
			},
			checks: []check{
				{model.Packet{Iif: "vlan7", Oif: "eth0", Src: addr("10.0.0.1"), Dst: addr("192.0.2.1"), Proto: protoTCP, DstPort: 1}, false},
				{model.Packet{Iif: "vlan7", Oif: "vlan8", Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: protoTCP, DstPort: 1}, true},
				{model.Packet{Iif: "cluster0", Oif: "eth0", Src: addr("10.0.0.1"), Dst: addr("192.0.2.1"), Proto: protoTCP, DstPort: 1}, true},
			},
		},
		{
			name: "policyTypes absent, egress rules: both directions isolated",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: webOnly,
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}}},
			})},
			checks: []check{
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), true},
				{eg("10.0.0.1", "198.51.100.1", protoTCP, 80), false},
				{eg("fd00::1", "2001:db8::1", protoTCP, 80), false},
				{in("192.0.2.1", "10.0.0.1", protoTCP, 80), false}, // ingress isolated, no ingress rules
				{in("192.0.2.1", "fd00::1", protoTCP, 80), false},
				{eg("10.0.0.2", "198.51.100.1", protoTCP, 80), true}, // db not selected
				{in("192.0.2.1", "10.0.0.2", protoTCP, 80), true},
			},
		},
		{
			name: "policyTypes [Egress] only: ingress unaffected",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: webOnly,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			})},
			cfg: func(c config.Config) config.Config { c.DefaultIngress = config.Allow; return c },
			checks: []check{
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), false},
				{in("192.0.2.1", "10.0.0.1", protoTCP, 80), true},
			},
		},
		{
			name: "policyTypes [Ingress] with egress rules: egress unaffected",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: webOnly,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}}},
			})},
			checks: []check{
				{eg("10.0.0.1", "198.51.100.1", protoTCP, 80), true},
				{in("192.0.2.1", "10.0.0.1", protoTCP, 80), false},
			},
		},
		{
			name: "empty from and empty ports: everything, ICMP too",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: webOnly,
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
			})},
			cfg: denyAll,
			checks: []check{
				{in("192.0.2.1", "10.0.0.1", 1, 0), true},
				{in("2001:db8::1", "fd00::1", 58, 0), true},
				{in("192.0.2.1", "10.0.0.1", protoSCTP, 9), true},
				{in("192.0.2.1", "10.0.0.2", protoTCP, 80), false}, // db: default deny
			},
		},
		{
			name: "empty to, ports given",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: proto(corev1.ProtocolUDP), Port: numPort(53)}}}},
			})},
			checks: []check{
				{eg("10.0.0.2", "192.0.2.1", protoUDP, 53), true},
				{eg("10.0.0.2", "192.0.2.1", protoTCP, 53), false},
				{eg("10.0.0.2", "192.0.2.1", 1, 0), false},
				{eg("10.0.1.1", "192.0.2.1", protoTCP, 53), true}, // namespace b not selected
			},
		},
		{
			name: "multiple policies: union",
			policies: []networkingv1.NetworkPolicy{
				np("a", "p1", networkingv1.NetworkPolicySpec{PodSelector: webOnly, Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: numPort(80)}}}}}),
				np("a", "p2", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}}}}),
			},
			checks: []check{
				{in("198.51.100.1", "10.0.0.1", protoTCP, 80), true},   // p1
				{in("192.0.2.9", "10.0.0.1", protoTCP, 443), true},     // p2
				{in("198.51.100.1", "10.0.0.1", protoTCP, 443), false}, // neither
				{in("198.51.100.1", "10.0.0.2", protoTCP, 80), false},  // db: only p2
			},
		},
		{
			name: "named port: ingress resolves on the selected destination pod",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: namedPort("http")}}}},
			})},
			checks: []check{
				{in("192.0.2.1", "10.0.0.1", protoTCP, 8080), true},
				{in("192.0.2.1", "10.0.0.1", protoTCP, 9090), false},
				{in("192.0.2.1", "10.0.0.2", protoTCP, 9090), true},
				{in("192.0.2.1", "10.0.0.2", protoTCP, 8080), false},
			},
		},
		{
			name: "named port: egress resolves on the peer pod at the destination",
			policies: []networkingv1.NetworkPolicy{np("b", "p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: namedPort("http")}}}},
			})},
			checks: []check{
				{eg("10.0.1.1", "10.0.0.1", protoTCP, 8080), true},
				{eg("10.0.1.1", "10.0.0.2", protoTCP, 9090), true},
				{eg("10.0.1.1", "10.0.0.2", protoTCP, 8080), false},
				{eg("10.0.1.1", "192.0.2.1", protoTCP, 8080), false}, // no pod there
			},
		},
		{
			name: "selector peers in other namespaces",
			policies: []networkingv1.NetworkPolicy{np("b", "p", networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"dev"}}}}, PodSelector: sel("app", "db")},
				}}},
			})},
			checks: []check{
				{in("10.0.0.2", "10.0.1.1", protoTCP, 80), true},
				{in("10.0.0.1", "10.0.1.1", protoTCP, 80), false},
				{in("10.0.0.99", "10.0.1.1", protoTCP, 80), false},
			},
		},
		{
			name: "invalid rule: the policy isolates and allows nothing",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: webOnly,
				Ingress: []networkingv1.NetworkPolicyIngressRule{
					{},
					{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24", Except: []string{"10.1.0.0/24"}}}}},
				},
			})},
			checks: []check{
				{in("192.0.2.1", "10.0.0.1", protoTCP, 80), false},
				{in("192.0.2.1", "10.0.0.2", protoTCP, 80), true},
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), true},
			},
		},
		{
			name: "invalid podSelector: the policy is ignored",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn}}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			})},
			cfg: func(c config.Config) config.Config { c.DefaultIngress = config.Allow; return c },
			checks: []check{
				{in("192.0.2.1", "10.0.0.1", protoTCP, 80), true},
				{eg("10.0.0.1", "192.0.2.1", protoTCP, 80), true},
			},
		},
		{
			name: "invalid policyType: the policy is ignored",
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, "Sideways"},
			})},
			checks: []check{{in("192.0.2.1", "10.0.0.1", protoTCP, 80), true}},
		},
		{
			name: "load balancer ingress",
			cfg:  func(c config.Config) config.Config { return lbOn(denyAll(c)) },
			services: []corev1.Service{{
				ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb"},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 443}}},
				Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.1"}, {IP: "10.0.0.2"}}}},
			}},
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{PodSelector: webOnly})},
			checks: []check{
				{in("192.0.2.1", "198.51.100.1", protoTCP, 443), true},
				{in("192.0.2.1", "198.51.100.1", protoTCP, 80), false},
				{in("192.0.2.1", "198.51.100.1", protoUDP, 443), false},
				{in("192.0.2.1", "10.0.0.2", protoTCP, 443), true}, // a pod no policy isolates
				// egress to the LB IP is egress, not LB ingress
				{eg("10.0.0.1", "198.51.100.1", protoTCP, 443), false},
			},
		},
		{
			name:     "load balancer ingress off",
			cfg:      denyAll,
			services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 443}}}, Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.1"}}}}}},
			checks:   []check{{in("192.0.2.1", "198.51.100.1", protoTCP, 443), false}},
		},
		{
			name: "load balancer IP of an isolated pod: the policy decides",
			cfg:  lbOn,
			services: []corev1.Service{{
				ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb"},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 443}}},
				Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "10.0.0.1"}}}},
			}},
			policies: []networkingv1.NetworkPolicy{np("a", "p", networkingv1.NetworkPolicySpec{PodSelector: webOnly})},
			checks:   []check{{in("192.0.2.1", "10.0.0.1", protoTCP, 443), false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Policies, s.Services = tt.policies, tt.services
			cfg := config.Defaults()
			if tt.cfg != nil {
				cfg = tt.cfg(cfg)
			}
			e := New(s, cfg)
			for _, c := range tt.checks {
				d := e.Decide(c.p)
				if d.Allow != c.want {
					t.Errorf("%+v: got %v (%s), want %v", c.p, d.Allow, d.Reason, c.want)
				}
				if got := Evaluate(s, cfg, c.p); got != d.Allow {
					t.Errorf("%+v: Evaluate = %v, Decide = %v", c.p, got, d.Allow)
				}
			}
		})
	}
}

func TestPodsTakingPart(t *testing.T) {
	hostNet := pod("a", "h", nil, []string{"10.0.0.5"})
	hostNet.Spec.HostNetwork = true
	done := pod("a", "done", nil, []string{"10.0.0.6"})
	done.Status.Phase = corev1.PodSucceeded
	deleting := pod("a", "del", nil, []string{"10.0.0.7"})
	deleting.DeletionTimestamp = &metav1.Time{}
	s := cluster.Snapshot{
		Pods: []corev1.Pod{hostNet, done, deleting, pod("a", "web", nil, []string{"10.0.0.8"})},
		Policies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "deny"},
			Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
		}},
	}
	cfg := config.Defaults()
	for ip, want := range map[string]bool{"10.0.0.5": true, "10.0.0.6": true, "10.0.0.7": true, "10.0.0.8": false} {
		p := model.Packet{Iif: "cluster0", Oif: "eth0", Src: addr(ip), Dst: addr("192.0.2.1"), Proto: protoTCP, DstPort: 80}
		if got := Evaluate(s, cfg, p); got != want {
			t.Errorf("egress from %s = %v, want %v", ip, got, want)
		}
	}
}
