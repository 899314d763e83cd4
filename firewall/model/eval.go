package model

import (
	"sort"
	"strings"
)

// maxDepth bounds jumps, as the kernel does (it rejects deeper rulesets).
const maxDepth = 16

// Eval interprets the ruleset's forward-hooked filter chains for the first
// packet of a connection (conntrack state new) and reports whether it is
// accepted. NAT chains, counters and logging do not affect the verdict. It
// is the compiler's executable specification for the fuzzer; the kernel
// runs the same model after the applier has translated it.
func Eval(rs Ruleset, p Packet) bool {
	e := evaluator{rs: rs, sets: map[string]*Set{}, chains: map[string]*Chain{}}
	for i := range rs.Sets {
		e.sets[rs.Sets[i].Name] = &rs.Sets[i]
	}
	var base []*Chain
	for i := range rs.Chains {
		c := &rs.Chains[i]
		e.chains[c.Name] = c
		if c.Hook != nil && c.Hook.Type == "filter" && c.Hook.Hook == "forward" {
			base = append(base, c)
		}
	}
	sort.SliceStable(base, func(i, j int) bool { return base[i].Hook.Priority < base[j].Hook.Priority })
	for _, c := range base {
		v := e.chain(c, p, 0)
		if v == None {
			v = c.Hook.Policy
		}
		if v == Drop {
			return false
		}
	}
	return true
}

type evaluator struct {
	rs     Ruleset
	sets   map[string]*Set
	chains map[string]*Chain
}

// chain returns Accept, Drop, or None (fell off the end or returned).
func (e *evaluator) chain(c *Chain, p Packet, depth int) VerdictKind {
	if c == nil || depth > maxDepth {
		return Drop
	}
	for _, r := range c.Rules {
		if !e.matches(r, p) {
			continue
		}
		v := r.Verdict
		if v.Kind == VMap {
			el, ok := e.lookup(*v.Map, p)
			if !ok {
				continue
			}
			v = el.Verdict
		}
		switch v.Kind {
		case Accept, Drop:
			return v.Kind
		case Return:
			return None
		case Jump:
			if got := e.chain(e.chains[v.Chain], p, depth+1); got != None {
				return got
			}
		case Goto:
			return e.chain(e.chains[v.Chain], p, depth+1)
		}
	}
	return None
}

func (e *evaluator) matches(r Rule, p Packet) bool {
	switch r.Family {
	case IPv4:
		if !p.Src.Is4() {
			return false
		}
	case IPv6:
		if !p.Src.Is6() {
			return false
		}
	}
	if r.Iif.Name != "" && ifMatches(r.Iif.Name, p.Iif) == r.Iif.Negate {
		return false
	}
	if r.Oif.Name != "" && ifMatches(r.Oif.Name, p.Oif) == r.Oif.Negate {
		return false
	}
	if r.CtState != 0 && r.CtState&CtNew == 0 {
		return false
	}
	for _, m := range r.Matches {
		if !matchField(m, p) {
			return false
		}
	}
	for _, l := range r.Lookups {
		if _, ok := e.lookup(l, p); ok == l.Negate {
			return false
		}
	}
	return true
}

func matchField(m Match, p Packet) bool {
	switch m.Field {
	case SrcAddr, DstAddr:
		a := p.Src
		if m.Field == DstAddr {
			a = p.Dst
		}
		return a.Is4() == m.Addr.From.Is4() && a.Compare(m.Addr.From) >= 0 && a.Compare(m.Addr.To) <= 0
	case L4Proto:
		return p.Proto == m.Proto
	case DstPort:
		return p.DstPort >= m.Port.From && p.DstPort <= m.Port.To
	}
	return false
}

// IfMatches compares an interface name with a pattern ("*" suffix = prefix).
func IfMatches(pattern, name string) bool { return ifMatches(pattern, name) }

func ifMatches(pattern, name string) bool {
	if pre, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, pre)
	}
	return pattern == name
}

func (e *evaluator) lookup(l Lookup, p Packet) (Element, bool) {
	s := e.sets[l.Set]
	if s == nil || len(s.Key) != len(l.Fields) {
		return Element{}, false
	}
	for _, f := range l.Fields {
		if f == SrcAddr || f == DstAddr {
			a := p.Src
			if f == DstAddr {
				a = p.Dst
			}
			// ip saddr in a packet of the other family never matches:
			// nft adds the nfproto dependency itself, the applier too.
			if (s.Family == IPv4) != a.Is4() {
				return Element{}, false
			}
		}
	}
	for _, el := range s.Elements {
		if elementMatches(s, el, l, p) {
			return el, true
		}
	}
	return Element{}, false
}

func elementMatches(s *Set, el Element, l Lookup, p Packet) bool {
	for i, f := range l.Fields {
		switch s.Key[i] {
		case KeyAddr:
			a := p.Src
			if f == DstAddr {
				a = p.Dst
			}
			if a.Compare(el.Addr.From) < 0 || a.Compare(el.Addr.To) > 0 {
				return false
			}
		case KeyProto:
			if p.Proto != el.Proto {
				return false
			}
		case KeyService:
			if p.DstPort < el.Port.From || p.DstPort > el.Port.To {
				return false
			}
		}
	}
	return true
}
