package model

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Render prints the table in nft(8) syntax, deterministically: the same
// Ruleset always gives the same bytes.
func Render(rs Ruleset) string {
	fams := make(map[string]Family, len(rs.Sets))
	for _, s := range rs.Sets {
		fams[s.Name] = s.Family
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	_, names := CounterNames(rs)
	for _, n := range names {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", n)
	}
	for _, s := range rs.Sets {
		renderSet(&b, s)
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if h := c.Hook; h != nil {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", h.Type, h.Hook, h.Priority, verdictWord(h.Policy))
		}
		for _, r := range c.Rules {
			b.WriteString("\t\t")
			b.WriteString(renderRule(fams, r))
			b.WriteByte('\n')
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// RenderReplace is Render preceded by the commands that make `nft -f`
// replace the table atomically (create it if missing, delete it, then
// define it, all in one transaction).
func RenderReplace(rs Ruleset) string {
	return fmt.Sprintf("add table inet %s\ndelete table inet %s\n", rs.Table, rs.Table) + Render(rs)
}

func renderSet(b *strings.Builder, s Set) {
	kw := "set"
	if s.Verdicts {
		kw = "map"
	}
	fmt.Fprintf(b, "\t%s %s {\n", kw, s.Name)
	types := make([]string, len(s.Key))
	for i, k := range s.Key {
		types[i] = keyTypeName(k, s.Family)
	}
	typ := strings.Join(types, " . ")
	if s.Verdicts {
		typ += " : verdict"
	}
	fmt.Fprintf(b, "\t\ttype %s\n", typ)
	if s.Interval {
		b.WriteString("\t\tflags interval\n")
	}
	if len(s.Elements) > 0 {
		b.WriteString("\t\telements = { ")
		for i, e := range s.Elements {
			if i > 0 {
				b.WriteString(",\n\t\t\t     ")
			}
			b.WriteString(renderElement(s, e))
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n")
}

func keyTypeName(k KeyKind, f Family) string {
	switch k {
	case KeyAddr:
		if f == IPv6 {
			return "ipv6_addr"
		}
		return "ipv4_addr"
	case KeyProto:
		return "inet_proto"
	}
	return "inet_service"
}

func renderElement(s Set, e Element) string {
	parts := make([]string, len(s.Key))
	for i, k := range s.Key {
		switch k {
		case KeyAddr:
			parts[i] = RenderAddrRange(e.Addr)
		case KeyProto:
			parts[i] = ProtoName(e.Proto)
		case KeyService:
			if e.Port.From == e.Port.To {
				parts[i] = strconv.Itoa(int(e.Port.From))
			} else {
				parts[i] = fmt.Sprintf("%d-%d", e.Port.From, e.Port.To)
			}
		}
	}
	out := strings.Join(parts, " . ")
	if s.Verdicts {
		out += " : " + renderVerdict(nil, e.Verdict)
	}
	return out
}

// RenderAddrRange prints a range as an address, a prefix when it is one,
// or from-to.
func RenderAddrRange(r AddrRange) string {
	if r.From == r.To {
		return r.From.String()
	}
	if p, ok := AsPrefix(r); ok {
		return p.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// AsPrefix reports whether the range is exactly one prefix.
func AsPrefix(r AddrRange) (netip.Prefix, bool) {
	for bits := 0; bits <= r.From.BitLen(); bits++ {
		p := netip.PrefixFrom(r.From, bits).Masked()
		if p.Addr() == r.From && LastAddr(p) == r.To {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// LastAddr is the highest address in p.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// ProtoName is nft's name for an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	case 1:
		return "icmp"
	case 58:
		return "ipv6-icmp"
	}
	return strconv.Itoa(int(p))
}

// RenderRule prints one rule as nft would accept it; rs supplies the
// families of the sets the rule looks up.
func RenderRule(rs Ruleset, r Rule) string {
	fams := make(map[string]Family, len(rs.Sets))
	for _, s := range rs.Sets {
		fams[s.Name] = s.Family
	}
	return renderRule(fams, r)
}

func renderRule(fams map[string]Family, r Rule) string {
	var w []string
	if r.Family != FamilyAny {
		w = append(w, "meta nfproto "+map[Family]string{IPv4: "ipv4", IPv6: "ipv6"}[r.Family])
	}
	if r.Iif.Name != "" {
		w = append(w, "iifname "+ifMatch(r.Iif))
	}
	if r.Oif.Name != "" {
		w = append(w, "oifname "+ifMatch(r.Oif))
	}
	if r.CtState != 0 {
		w = append(w, "ct state "+ctStates(r.CtState))
	}
	for _, m := range r.Matches {
		w = append(w, renderMatch(m))
	}
	for _, l := range r.Lookups {
		op := "@"
		if l.Negate {
			op = "!= @"
		}
		w = append(w, lookupFields(fams, l)+" "+op+l.Set)
	}
	switch {
	case r.Counter && r.Comment != "":
		w = append(w, fmt.Sprintf("counter name %q", CounterName(r.Comment)))
	case r.Counter:
		w = append(w, "counter")
	}
	if r.Log != nil {
		w = append(w, fmt.Sprintf("limit rate %d/second burst %d packets log prefix %q", r.Log.Rate, r.Log.Burst, r.Log.Prefix))
	}
	if v := renderVerdict(fams, r.Verdict); v != "" {
		w = append(w, v)
	}
	if r.Comment != "" {
		w = append(w, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(w, " ")
}

func renderMatch(m Match) string {
	switch m.Field {
	case SrcAddr, DstAddr:
		fam, dir := IPv4, "saddr"
		if !m.Addr.From.Is4() {
			fam = IPv6
		}
		if m.Field == DstAddr {
			dir = "daddr"
		}
		return fam.String() + " " + dir + " " + RenderAddrRange(m.Addr)
	case L4Proto:
		return "meta l4proto " + ProtoName(m.Proto)
	case DstPort:
		if m.Port.From == m.Port.To {
			return fmt.Sprintf("th dport %d", m.Port.From)
		}
		return fmt.Sprintf("th dport %d-%d", m.Port.From, m.Port.To)
	}
	return fmt.Sprintf("<field %d>", m.Field)
}

func ifMatch(m IfMatch) string {
	if m.Negate {
		return "!= " + strconv.Quote(m.Name)
	}
	return strconv.Quote(m.Name)
}

func ctStates(m CtState) string {
	var s []string
	for _, st := range []struct {
		bit  CtState
		name string
	}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}} {
		if m&st.bit != 0 {
			s = append(s, st.name)
		}
	}
	return strings.Join(s, ",")
}

// SetFamily is the family of a named set in rs (FamilyAny if absent).
func SetFamily(rs Ruleset, name string) Family {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s.Family
		}
	}
	return FamilyAny
}

func lookupFields(fams map[string]Family, l Lookup) string {
	fam := fams[l.Set]
	parts := make([]string, len(l.Fields))
	for i, f := range l.Fields {
		switch f {
		case SrcAddr, DstAddr:
			dir := "saddr"
			if f == DstAddr {
				dir = "daddr"
			}
			parts[i] = fam.String() + " " + dir
		case L4Proto:
			parts[i] = "meta l4proto"
		case DstPort:
			parts[i] = "th dport"
		}
	}
	return strings.Join(parts, " . ")
}

func verdictWord(k VerdictKind) string {
	switch k {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Return:
		return "return"
	}
	return ""
}

func renderVerdict(fams map[string]Family, v Verdict) string {
	switch v.Kind {
	case Accept, Drop, Return:
		return verdictWord(v.Kind)
	case Jump:
		return "jump " + v.Chain
	case Goto:
		return "goto " + v.Chain
	case VMap:
		if v.Map == nil {
			return "vmap <nil>"
		}
		return lookupFields(fams, *v.Map) + " vmap @" + v.Map.Set
	case Masquerade:
		return "masquerade"
	case SNAT:
		if v.Addr.Is4() {
			return "snat ip to " + v.Addr.String()
		}
		return "snat ip6 to " + v.Addr.String()
	}
	return ""
}
