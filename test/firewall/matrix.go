package firewall

import (
	"fmt"
	"net/netip"

	"github.com/anvil-metal/anvil/firewall/model"
)

// Probe is one attempt at a new connection from Src to Dst:Port, or an
// ICMP echo from Src to Dst.
type Probe struct {
	Src, Dst netip.Addr
	Proto    uint8 // model.ProtoTCP, ProtoUDP, ProtoSCTP; ProtoICMP, ProtoICMPv6
	Port     uint16
}

// The ICMP protocol numbers: an echo request and its reply, for the
// policies a protocol without ports (NetworkPolicy rules without ports
// allow every protocol; rules with ports name TCP, UDP or SCTP only).
const (
	ProtoICMP   uint8 = 1
	ProtoICMPv6 uint8 = 58
)

func (p Probe) String() string {
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		return fmt.Sprintf("%s %s -> %s", ProtoName(p.Proto), p.Src, p.Dst)
	}
	return fmt.Sprintf("%s %s -> %s", ProtoName(p.Proto), p.Src, netip.AddrPortFrom(p.Dst, p.Port))
}

// ProtoName is the protocol's name as Kubernetes spells it.
func ProtoName(p uint8) string {
	switch p {
	case model.ProtoTCP:
		return "TCP"
	case model.ProtoUDP:
		return "UDP"
	case model.ProtoSCTP:
		return "SCTP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMPv6"
	}
	return fmt.Sprintf("proto-%d", p)
}

// AllProtos are the protocols probed: TCP, UDP, SCTP and ICMP echo
// (ProtoICMP stands for ICMPv6 too in Matrix).
func AllProtos() []uint8 { return []uint8{model.ProtoTCP, model.ProtoUDP, model.ProtoSCTP, ProtoICMP} }

// Matrix is every probe from each source to each destination of the
// same family, on each port and protocol; ProtoICMP gives one echo per
// pair, ICMPv6 for IPv6 pairs.
func Matrix(srcs, dsts []netip.Addr, ports []uint16, protos []uint8) []Probe {
	var out []Probe
	for _, s := range srcs {
		for _, d := range dsts {
			if s.Is4() != d.Is4() {
				continue
			}
			for _, proto := range protos {
				if proto == ProtoICMP {
					if d.Is6() {
						proto = ProtoICMPv6
					}
					out = append(out, Probe{Src: s, Dst: d, Proto: proto})
					continue
				}
				for _, port := range ports {
					out = append(out, Probe{Src: s, Dst: d, Proto: proto, Port: port})
				}
			}
		}
	}
	return out
}
