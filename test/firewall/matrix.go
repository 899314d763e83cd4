package firewall

import (
	"fmt"
	"net/netip"

	"github.com/anvil-metal/anvil/firewall/model"
)

// Probe is one attempt at a new connection from Src to Dst:Port.
type Probe struct {
	Src, Dst netip.Addr
	Proto    uint8 // model.ProtoTCP, ProtoUDP or ProtoSCTP
	Port     uint16
}

func (p Probe) String() string {
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
	}
	return fmt.Sprintf("proto-%d", p)
}

// AllProtos are the protocols probed: TCP, UDP and SCTP.
func AllProtos() []uint8 { return []uint8{model.ProtoTCP, model.ProtoUDP, model.ProtoSCTP} }

// Matrix is every probe from each source to each destination of the
// same family, on each port and protocol.
func Matrix(srcs, dsts []netip.Addr, ports []uint16, protos []uint8) []Probe {
	var out []Probe
	for _, s := range srcs {
		for _, d := range dsts {
			if s.Is4() != d.Is4() {
				continue
			}
			for _, proto := range protos {
				for _, port := range ports {
					out = append(out, Probe{Src: s, Dst: d, Proto: proto, Port: port})
				}
			}
		}
	}
	return out
}
