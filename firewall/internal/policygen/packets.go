package policygen

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

// IP protocol numbers packets use besides TCP, UDP and SCTP.
const (
	protoICMP   = 1
	protoICMPv6 = 58
	protoGRE    = 47
)

// Packets returns n first packets of connections for s and cfg: egress
// and ingress mostly, some not crossing the firewall; addresses biased to
// pod IPs, load-balancer IPs, the boundaries (and one past them) of every
// ipBlock cidr and except, and outside addresses; ports at range ends (and
// one past them), numeric and named-port numbers; protocols TCP, UDP,
// SCTP, ICMP and ICMPv6 (and, rarely, one no policy names).
func Packets(r *rand.Rand, s cluster.Snapshot, cfg config.Config, n int) []model.Packet {
	g := newPacketGen(s, cfg)
	out := make([]model.Packet, 0, n)
	for range n {
		out = append(out, g.packet(r))
	}
	return out
}

type packetGen struct {
	clusterIfs, outsideIfs []string
	// by family (index 0: v4, 1: v6)
	pods, lbs, edges [2][]netip.Addr
	ports            []uint16
	lbPorts          map[netip.Addr][]lbPort
}

type lbPort struct {
	proto uint8
	port  uint16
}

func famIdx(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func newPacketGen(s cluster.Snapshot, cfg config.Config) *packetGen {
	g := &packetGen{lbPorts: map[netip.Addr][]lbPort{}}
	for _, c := range cfg.ClusterInterfaces {
		if pre, ok := strings.CutSuffix(c, "*"); ok {
			g.clusterIfs = append(g.clusterIfs, pre, pre+"0", pre+"12")
			if len(pre) > 1 {
				g.outsideIfs = append(g.outsideIfs, pre[:len(pre)-1]) // one short of the prefix
			}
		} else {
			g.clusterIfs = append(g.clusterIfs, c)
			g.outsideIfs = append(g.outsideIfs, c+"0") // an exact name is no prefix
		}
	}
	g.outsideIfs = append(g.outsideIfs, "eth0", "wan0")
	g.outsideIfs = slices.DeleteFunc(g.outsideIfs, func(n string) bool { return isClusterIf(cfg.ClusterInterfaces, n) })

	for _, a := range podIPs(&s) {
		g.pods[famIdx(a)] = append(g.pods[famIdx(a)], a)
	}
	for _, svc := range s.Services {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				a = a.Unmap()
				g.lbs[famIdx(a)] = append(g.lbs[famIdx(a)], a)
				for _, sp := range svc.Spec.Ports {
					proto := map[corev1.Protocol]uint8{"": 6, corev1.ProtocolTCP: 6, corev1.ProtocolUDP: 17, corev1.ProtocolSCTP: 132}[sp.Protocol]
					g.lbPorts[a] = append(g.lbPorts[a], lbPort{proto, uint16(sp.Port)})
				}
			}
		}
		for _, sp := range svc.Spec.Ports {
			g.addPort(int(sp.Port))
		}
	}
	edge := func(prefix string) {
		p, err := netip.ParsePrefix(prefix)
		if err != nil {
			return
		}
		p = p.Masked()
		first, last := p.Addr(), LastAddr(p)
		for _, a := range []netip.Addr{first, first.Prev(), first.Next(), last, last.Next(), last.Prev()} {
			if a.IsValid() {
				g.edges[famIdx(a)] = append(g.edges[famIdx(a)], a)
			}
		}
	}
	for _, np := range s.Policies {
		var rulePorts []int
		for _, rule := range np.Spec.Ingress {
			for _, peer := range rule.From {
				if peer.IPBlock != nil {
					edge(peer.IPBlock.CIDR)
					for _, ex := range peer.IPBlock.Except {
						edge(ex)
					}
				}
			}
			for _, p := range rule.Ports {
				rulePorts = append(rulePorts, portEdges(p.Port, p.EndPort)...)
			}
		}
		for _, rule := range np.Spec.Egress {
			for _, peer := range rule.To {
				if peer.IPBlock != nil {
					edge(peer.IPBlock.CIDR)
					for _, ex := range peer.IPBlock.Except {
						edge(ex)
					}
				}
			}
			for _, p := range rule.Ports {
				rulePorts = append(rulePorts, portEdges(p.Port, p.EndPort)...)
			}
		}
		for _, p := range rulePorts {
			g.addPort(p)
		}
	}
	for _, p := range s.Pods {
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				g.addPort(int(cp.ContainerPort))
			}
		}
	}
	for _, p := range []int{0, 1, 65535} {
		g.addPort(p)
	}
	return g
}

// portEdges are a policy port's number and range end, and one either side.
// Named ports are resolved through the container ports, added elsewhere.
func portEdges(port *intstr.IntOrString, end *int32) []int {
	if port == nil || port.Type != intstr.Int {
		return nil
	}
	p := int(port.IntVal)
	out := []int{p - 1, p, p + 1}
	if end != nil {
		out = append(out, int(*end)-1, int(*end), int(*end)+1)
	}
	return out
}

func (g *packetGen) addPort(p int) {
	if p >= 0 && p <= 65535 && !slices.Contains(g.ports, uint16(p)) {
		g.ports = append(g.ports, uint16(p))
	}
}

func isClusterIf(patterns []string, name string) bool {
	for _, c := range patterns {
		if pre, ok := strings.CutSuffix(c, "*"); ok && strings.HasPrefix(name, pre) || c == name {
			return true
		}
	}
	return false
}

// addr draws an address of family fam: preferring the pod (and, for
// ingress, load-balancer) addresses when podBias says so.
func (g *packetGen) addr(r *rand.Rand, fam int, podBias, lb bool) netip.Addr {
	if podBias && len(g.pods[fam]) > 0 && chance(r, 75) {
		return pick(r, g.pods[fam])
	}
	if lb && len(g.lbs[fam]) > 0 && chance(r, 50) {
		return pick(r, g.lbs[fam])
	}
	switch n := r.IntN(10); {
	case n < 4 && len(g.edges[fam]) > 0:
		return pick(r, g.edges[fam])
	case n < 6 && len(g.pods[fam]) > 0:
		return pick(r, g.pods[fam])
	case n < 7 && len(g.lbs[fam]) > 0:
		return pick(r, g.lbs[fam])
	case n < 8:
		return podAddr(r, 4+2*fam)
	}
	var outs []netip.Addr
	for _, a := range outsideAddrs() {
		if famIdx(a) == fam {
			outs = append(outs, a)
		}
	}
	return pick(r, outs)
}

func (g *packetGen) packet(r *rand.Rand) model.Packet {
	var p model.Packet
	fam := r.IntN(2)
	if len(g.pods[fam]) == 0 && len(g.pods[1-fam]) > 0 && chance(r, 80) {
		fam = 1 - fam // where the pods are
	}
	switch n := r.IntN(20); {
	case n < 9: // egress
		p.Iif, p.Oif = pick(r, g.clusterIfs), pick(r, g.outsideIfs)
		p.Src, p.Dst = g.addr(r, fam, true, false), g.addr(r, fam, false, false)
	case n < 18: // ingress
		p.Iif, p.Oif = pick(r, g.outsideIfs), pick(r, g.clusterIfs)
		p.Src, p.Dst = g.addr(r, fam, false, false), g.addr(r, fam, true, true)
	case n < 19: // within the cluster
		p.Iif, p.Oif = pick(r, g.clusterIfs), pick(r, g.clusterIfs)
		p.Src, p.Dst = g.addr(r, fam, true, false), g.addr(r, fam, true, false)
	default: // within the outside
		p.Iif, p.Oif = pick(r, g.outsideIfs), pick(r, g.outsideIfs)
		p.Src, p.Dst = g.addr(r, fam, false, false), g.addr(r, fam, false, false)
	}
	icmp := []uint8{protoICMP, protoICMPv6}[fam]
	switch n := r.IntN(100); {
	case n < 35:
		p.Proto = 6
	case n < 60:
		p.Proto = 17
	case n < 77:
		p.Proto = 132
	case n < 95:
		p.Proto = icmp
	default:
		p.Proto = pick(r, []uint8{protoGRE, protoICMP + protoICMPv6 - icmp})
	}
	if p.Proto == 6 || p.Proto == 17 || p.Proto == 132 {
		if chance(r, 90) {
			p.DstPort = pick(r, g.ports)
		} else {
			p.DstPort = uint16(r.IntN(65536))
		}
	}
	if lp := g.lbPorts[p.Dst]; len(lp) > 0 && chance(r, 50) {
		// A service port of the load balancer, or one protocol off.
		l := pick(r, lp)
		p.Proto, p.DstPort = l.proto, l.port
		if chance(r, 20) {
			p.Proto = pick(r, []uint8{6, 17, 132})
		}
	}
	return p
}
