package compile

import (
	"fmt"
	"net/netip"
	"sort"

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
	// inlineMax is the most alternatives (address ranges or named-port
	// destinations) of one part written inline; a list of ports is inline
	// only when it is one protocol and range.
	inlineMax = 4
	// maxRules bounds the rules one policy rule expands into per family:
	// the inline parts' alternatives multiply.
	maxRules = 8
)

// part is a union of alternatives that one rule condition accepts:
// either inline (one rule per alternative) or one set lookup.
type part struct {
	count  int                 // alternatives
	inline [][]model.Match     // the alternatives, built only when count <= inlineMax
	toSet  func() model.Lookup // interns the set holding all alternatives
	// shared: a set even when small. Port lists are: many policies
	// repeat the same few, so their sets are shared, and inline they
	// would multiply the rules of every address alternative.
	shared bool
	asSet  bool
	lookup *model.Lookup // made by toSet, once
}

func (p *part) alternatives() int {
	if p.asSet {
		return 1
	}
	return p.count
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
			p.asSet = (p.shared && p.count > 1) || p.count > inlineMax
		}
	}
	for {
		n := 1
		var widest *part
		for _, c := range conds {
			n *= c.alternatives()
			for _, p := range c {
				if !p.asSet && p.count > 1 && (widest == nil || p.count > widest.count) {
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
					if p.lookup == nil {
						l := p.toSet()
						p.lookup = &l
					}
					nr := r
					nr.Lookups = append(append([]model.Lookup(nil), r.Lookups...), *p.lookup)
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
	p := &part{count: len(rs), toSet: func() model.Lookup {
		return model.Lookup{Fields: []model.Field{field}, Set: c.addrSet(f, rs)}
	}}
	if p.count > inlineMax {
		return p
	}
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
		return prefixRange(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	}
	return prefixRange(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
}

func protoPort(proto uint8, from, to uint16) []model.Match {
	ms := []model.Match{{Field: model.L4Proto, Proto: proto}}
	if from != 0 || to != 65535 {
		ms = append(ms, model.Match{Field: model.DstPort, Port: model.PortRange{From: from, To: to}})
	}
	return ms
}

func (c *compiler) portPart(ps []portRange) *part {
	p := &part{count: len(ps), shared: true, toSet: func() model.Lookup {
		return model.Lookup{Fields: []model.Field{model.L4Proto, model.DstPort}, Set: c.portSet(ps)}
	}}
	for _, r := range ps {
		p.inline = append(p.inline, protoPort(r.proto, r.from, r.to))
	}
	return p
}

// namedPart matches destination address, protocol and port against the
// resolved named ports n of family f.
func (c *compiler) namedPart(f model.Family, n *namedSet) *part {
	p := &part{count: len(n.els), toSet: func() model.Lookup {
		if n.set == "" {
			n.set = c.internSet(model.Set{Family: f, Key: []model.KeyKind{model.KeyAddr, model.KeyProto, model.KeyService}, Elements: n.els}, "named"+famSuffix(f))
		}
		return model.Lookup{Fields: []model.Field{model.DstAddr, model.L4Proto, model.DstPort}, Set: n.set}
	}}
	if p.count > inlineMax {
		return p
	}
	for _, e := range n.els {
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
func (c *compiler) peerCond(field model.Field, fi int, blocks, pods, union addrRanges) cond {
	f := families[fi]
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
	selectors := 0
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
		selectors++
		for i, rs := range c.peerAddrs(p.ref.Namespace, peer) {
			pods[i] = append(pods[i], rs...)
		}
	}
	var union [2]addrRanges
	for i := range families {
		blocks[i] = blocks[i].normalize()
		if selectors > 1 {
			pods[i] = pods[i].normalize()
		}
		switch {
		case len(blocks[i]) == 0:
			union[i] = pods[i]
		case len(pods[i]) == 0:
			union[i] = blocks[i]
		default:
			union[i] = append(append(addrRanges(nil), blocks[i]...), pods[i]...).normalize()
		}
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
				pc := c.peerCond(peerField, fi, blocks[fi], pods[fi], union[fi])
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
			ns := c.namedElements(d, p, named, allAddr, union[fi], fi)
			if len(ns.els) == 0 {
				continue
			}
			conds := []cond{{c.namedPart(f, ns)}}
			if d == ingress && !allAddr {
				// The peer is the source: its family is the packet's.
				pc := c.peerCond(model.SrcAddr, fi, blocks[fi], pods[fi], union[fi])
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
// egress (found through the address index, so the cost follows the pods
// in the peers, not all pods).
func (c *compiler) namedElements(d direction, p *policy, named []namedPort, allAddr bool, peers addrRanges, fi int) *namedSet {
	// Egress elements depend only on the peers and the names: many
	// policies share them (memoised with their set).
	var key []byte
	if d == egress {
		key = fmt.Appendf(nil, "%d|%v|%v|", fi, allAddr, named)
		for _, r := range peers {
			from, to := r.From.As16(), r.To.As16()
			key = append(append(key, from[:]...), to[:]...)
		}
		if got, ok := c.namedMemo[string(key)]; ok {
			return got
		}
	}
	seen := map[model.Element]bool{}
	var els []model.Element
	add := func(pod int, ip netip.Addr) {
		for _, n := range named {
			for _, cp := range c.pods[pod].Ports {
				if cp.Name != n.name || protoOf(&cp.Protocol) != n.proto || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
					continue
				}
				e := model.Element{Addr: model.AddrRange{From: ip, To: ip}, Proto: n.proto, Port: model.PortRange{From: uint16(cp.ContainerPort), To: uint16(cp.ContainerPort)}}
				if !seen[e] {
					seen[e] = true
					els = append(els, e)
				}
			}
		}
	}
	switch {
	case d == ingress:
		for _, pod := range p.selected {
			for _, ip := range c.pods[pod].IPs {
				if famIndex(ip) == fi {
					add(pod, ip)
				}
			}
		}
	case allAddr:
		for _, a := range c.addrIndex()[fi] {
			add(a.pod, a.ip)
		}
	default:
		idx := c.addrIndex()[fi]
		for _, r := range peers {
			i := sort.Search(len(idx), func(i int) bool { return !idx[i].ip.Less(r.From) })
			for ; i < len(idx) && !r.To.Less(idx[i].ip); i++ {
				add(idx[i].pod, idx[i].ip)
			}
		}
	}
	sortElements(els)
	out := &namedSet{els: els}
	if key != nil {
		c.namedMemo[string(key)] = out
	}
	return out
}

// namedSet is resolved named-port destinations and, once made, their set.
type namedSet struct {
	els []model.Element
	set string
}

type podAddr struct {
	ip  netip.Addr
	pod int
}

// addrIndex lists the pods' addresses of each family in address order,
// built on first use.
func (c *compiler) addrIndex() *[2][]podAddr {
	if c.byAddr != nil {
		return c.byAddr
	}
	c.byAddr = new([2][]podAddr)
	for i, pod := range c.pods {
		for _, ip := range pod.IPs {
			c.byAddr[famIndex(ip)] = append(c.byAddr[famIndex(ip)], podAddr{ip, i})
		}
	}
	for fi := range c.byAddr {
		idx := c.byAddr[fi]
		sort.Slice(idx, func(i, j int) bool {
			if idx[i].ip != idx[j].ip {
				return idx[i].ip.Less(idx[j].ip)
			}
			return idx[i].pod < idx[j].pod
		})
	}
	return c.byAddr
}
