package compile

import (
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/anvil-metal/anvil/firewall/model"
)

// Small parts of a rule are written into the rules themselves instead of
// a set. The kernel finds a set by walking the table's list of sets by
// name — when the set is created (to refuse a duplicate) and for every
// rule that looks it up — so a ruleset of thousands of small sets costs
// time quadratic in their number to load, while a few inline comparisons
// cost one rule each and are as cheap on the packet path as a lookup.
const (
	// inlineMax is the most alternatives (address ranges, port ranges or
	// named-port destinations) of one part written inline.
	inlineMax = 4
	// maxRules bounds the rules one policy rule expands into per family:
	// the inline parts' alternatives multiply.
	maxRules = 8
)

// part is a union of alternatives that one rule condition accepts:
// either inline (one rule per alternative) or one set lookup.
type part struct {
	inline [][]model.Match
	toSet  func() model.Lookup // interns the set holding all alternatives
	asSet  bool
}

func (p *part) alternatives() int {
	if p.asSet {
		return 1
	}
	return len(p.inline)
}

// cond is a condition of a rule: the packet must match one of its parts.
type cond []*part

func (c cond) alternatives() int {
	n := 0
	for _, p := range c {
		n += p.alternatives()
	}
	return n
}

// expand writes the rules for conds (all must hold), each a copy of base.
// It turns the largest inline parts into sets until the number of rules
// is at most maxRules.
func expand(base model.Rule, conds []cond) []model.Rule {
	for _, c := range conds {
		for _, p := range c {
			p.asSet = len(p.inline) > inlineMax
		}
	}
	for {
		n := 1
		var widest *part
		for _, c := range conds {
			n *= c.alternatives()
			for _, p := range c {
				if !p.asSet && len(p.inline) > 1 && (widest == nil || len(p.inline) > len(widest.inline)) {
					widest = p
				}
			}
		}
		if n <= maxRules || widest == nil {
			break
		}
		widest.asSet = true
	}
	out := []model.Rule{base}
	for _, c := range conds {
		var next []model.Rule
		for _, r := range out {
			for _, p := range c {
				if p.asSet {
					nr := r
					nr.Lookups = append(append([]model.Lookup(nil), r.Lookups...), p.toSet())
					next = append(next, nr)
					continue
				}
				for _, ms := range p.inline {
					nr := r
					nr.Matches = append(append([]model.Match(nil), r.Matches...), ms...)
					next = append(next, nr)
				}
			}
		}
		out = next
	}
	return out
}

// addrPart matches field against ranges of family f (nil when there are
// none). A range of the whole family needs no comparison.
func (c *compiler) addrPart(field model.Field, f model.Family, rs addrRanges) *part {
	if len(rs) == 0 {
		return nil
	}
	p := &part{toSet: func() model.Lookup {
		return model.Lookup{Fields: []model.Field{field}, Set: c.addrSet(f, rs)}
	}}
	for _, r := range rs {
		if r == fullRange(f) {
			p.inline = append(p.inline, nil)
			continue
		}
		p.inline = append(p.inline, []model.Match{{Field: field, Addr: r}})
	}
	return p
}

func fullRange(f model.Family) model.AddrRange {
	if f == model.IPv4 {
		return model.AddrRange{From: netip.IPv4Unspecified(), To: netip.AddrFrom4([4]byte{255, 255, 255, 255})}
	}
	all := [16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}
	return model.AddrRange{From: netip.IPv6Unspecified(), To: netip.AddrFrom16(all)}
}

func protoPort(proto uint8, from, to uint16) []model.Match {
	ms := []model.Match{{Field: model.L4Proto, Proto: proto}}
	if from != 0 || to != 65535 {
		ms = append(ms, model.Match{Field: model.DstPort, Port: model.PortRange{From: from, To: to}})
	}
	return ms
}

func (c *compiler) portPart(ps []portRange) *part {
	p := &part{toSet: func() model.Lookup {
		return model.Lookup{Fields: []model.Field{model.L4Proto, model.DstPort}, Set: c.portSet(ps)}
	}}
	for _, r := range ps {
		p.inline = append(p.inline, protoPort(r.proto, r.from, r.to))
	}
	return p
}

// namedPart matches destination address, protocol and port against the
// resolved named ports els of family f.
func (c *compiler) namedPart(f model.Family, els []model.Element) *part {
	p := &part{toSet: func() model.Lookup {
		set := c.internSet(model.Set{Family: f, Key: []model.KeyKind{model.KeyAddr, model.KeyProto, model.KeyService}, Elements: els}, "named"+famSuffix(f))
		return model.Lookup{Fields: []model.Field{model.DstAddr, model.L4Proto, model.DstPort}, Set: set}
	}}
	for _, e := range els {
		ms := []model.Match{{Field: model.DstAddr, Addr: e.Addr}}
		p.inline = append(p.inline, append(ms, protoPort(e.Proto, e.Port.From, e.Port.To)...))
	}
	return p
}

// peerCond is the condition "the peer is one of the rule's peers" for
// family index fi, or nil when no peer has an address of that family.
// Small unions are inline as a whole; otherwise the ipBlocks (usually the
// policy's own) and the selected pods (often shared by many policies of a
// namespace, so their set is too) are separate parts.
func (c *compiler) peerCond(field model.Field, fi int, blocks, pods addrRanges) cond {
	f := families[fi]
	union := append(append(addrRanges(nil), blocks...), pods...).normalize()
	if len(union) == 0 {
		return nil
	}
	if len(union) <= inlineMax {
		return cond{c.addrPart(field, f, union)}
	}
	var out cond
	for _, rs := range []addrRanges{blocks, pods} {
		if p := c.addrPart(field, f, rs); p != nil {
			out = append(out, p)
		}
	}
	return out
}

type namedPort struct {
	name  string
	proto uint8
}

// policyRule compiles one ingress or egress rule of a policy.
func (c *compiler) policyRule(d direction, p *policy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, comment string) []model.Rule {
	allAddr := len(peers) == 0
	var blocks, pods [2]addrRanges
	for _, peer := range peers {
		if b := peer.IPBlock; b != nil {
			cidr, err := netip.ParsePrefix(b.CIDR)
			if err != nil {
				continue
			}
			var cut addrRanges
			for _, ex := range b.Except {
				if e, err := netip.ParsePrefix(ex); err == nil {
					cut = append(cut, prefixRange(e))
				}
			}
			fi := famIndex(cidr.Addr())
			blocks[fi] = append(blocks[fi], addrRanges{prefixRange(cidr)}.subtract(cut.normalize())...)
			continue
		}
		for _, pod := range c.peerPods(p.ref.Namespace, peer) {
			for _, ip := range c.pods[pod].IPs {
				pods[famIndex(ip)] = append(pods[famIndex(ip)], model.AddrRange{From: ip, To: ip})
			}
		}
	}
	var union [2]addrRanges
	for i := range families {
		blocks[i], pods[i] = blocks[i].normalize(), pods[i].normalize()
		union[i] = append(append(addrRanges(nil), blocks[i]...), pods[i]...).normalize()
	}
	allPorts := len(ports) == 0
	var numeric []portRange
	var named []namedPort
	for _, pt := range ports {
		proto := protoOf(pt.Protocol)
		switch {
		case pt.Port == nil:
			numeric = append(numeric, portRange{proto, 0, 65535})
		case pt.Port.Type == 1:
			named = append(named, namedPort{pt.Port.StrVal, proto})
		default:
			to := pt.Port.IntVal
			if pt.EndPort != nil {
				to = *pt.EndPort
			}
			numeric = append(numeric, portRange{proto, uint16(pt.Port.IntVal), uint16(to)})
		}
	}
	numeric = normalizePorts(numeric)
	peerField := model.DstAddr
	if d == ingress {
		peerField = model.SrcAddr
	}
	base := model.Rule{Counter: true, Verdict: model.Verdict{Kind: model.Accept}, Comment: comment}
	var out []model.Rule
	if allPorts || len(numeric) > 0 {
		var portConds []cond
		if !allPorts {
			portConds = []cond{{c.portPart(numeric)}}
		}
		if allAddr {
			out = append(out, expand(base, portConds)...)
		} else {
			for fi, f := range families {
				pc := c.peerCond(peerField, fi, blocks[fi], pods[fi])
				if pc == nil {
					continue
				}
				r := base
				r.Family = f
				out = append(out, expand(r, append([]cond{pc}, portConds...))...)
			}
		}
	}
	if len(named) > 0 {
		for fi, f := range families {
			els := c.namedElements(d, p, named, allAddr, union[fi], f)
			if len(els) == 0 {
				continue
			}
			conds := []cond{{c.namedPart(f, els)}}
			if d == ingress && !allAddr {
				// The peer is the source: its family is the packet's.
				pc := c.peerCond(model.SrcAddr, fi, blocks[fi], pods[fi])
				if pc == nil {
					continue
				}
				conds = append([]cond{pc}, conds...)
			}
			r := base
			r.Family = f
			out = append(out, expand(r, conds)...)
		}
	}
	return out
}

// namedElements resolves named ports on the pods at the destination: the
// policy's selected pods for ingress, the pods inside the peers for
// egress.
func (c *compiler) namedElements(d direction, p *policy, named []namedPort, allAddr bool, peers addrRanges, f model.Family) []model.Element {
	seen := map[model.Element]bool{}
	var els []model.Element
	add := func(pod int, n namedPort, port int32) {
		for _, ip := range c.pods[pod].IPs {
			if (f == model.IPv4) != ip.Is4() {
				continue
			}
			if d == egress && !allAddr && !peers.contains(ip) {
				continue
			}
			e := model.Element{Addr: model.AddrRange{From: ip, To: ip}, Proto: n.proto, Port: model.PortRange{From: uint16(port), To: uint16(port)}}
			if !seen[e] {
				seen[e] = true
				els = append(els, e)
			}
		}
	}
	for _, n := range named {
		if d == ingress {
			for _, pod := range p.selected {
				for _, cp := range c.pods[pod].Ports {
					if cp.Name == n.name && protoOf(&cp.Protocol) == n.proto && cp.ContainerPort >= 1 && cp.ContainerPort <= 65535 {
						add(pod, n, cp.ContainerPort)
					}
				}
			}
			continue
		}
		for _, pp := range c.namedIndex()[n] {
			add(pp.pod, n, pp.port)
		}
	}
	sortElements(els)
	return els
}

type podPort struct {
	pod  int
	port int32
}

// namedIndex lists, for each port name and protocol, the pods that
// declare it, built on first use.
func (c *compiler) namedIndex() map[namedPort][]podPort {
	if c.byPortName != nil {
		return c.byPortName
	}
	c.byPortName = map[namedPort][]podPort{}
	for i, pod := range c.pods {
		for _, cp := range pod.Ports {
			if cp.Name == "" || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				continue
			}
			k := namedPort{cp.Name, protoOf(&cp.Protocol)}
			c.byPortName[k] = append(c.byPortName[k], podPort{i, cp.ContainerPort})
		}
	}
	return c.byPortName
}
