// Package model is the plain-data nftables ruleset anvil-firewall programs:
// one table of family inet with named sets (plain, interval and
// concatenated, e.g. ipv4_addr . inet_proto . inet_service), verdict maps,
// chains and rules. The compiler produces it, Render prints it in nft(8)
// syntax (for --dry-run, goldens and the nft -f baseline), Eval interprets
// it for one packet (for the fuzzer), and the applier translates it into
// one netlink batch. It has no I/O.
package model

import "net/netip"

// Family restricts a set's addresses or a rule to one IP version.
type Family uint8

const (
	FamilyAny Family = iota
	IPv4
	IPv6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ip"
	case IPv6:
		return "ip6"
	}
	return "any"
}

// Field is one packet field a lookup or a set key uses.
type Field uint8

const (
	// SrcAddr and DstAddr are ip/ip6 saddr and daddr (by the lookup's set
	// family); L4Proto is meta l4proto; DstPort is th dport (transport
	// header bytes 2-3, used only together with an L4Proto of TCP, UDP or
	// SCTP).
	SrcAddr Field = iota + 1
	DstAddr
	L4Proto
	DstPort
)

// KeyKind is the datatype of one part of a set's key.
type KeyKind uint8

const (
	KeyAddr    KeyKind = iota + 1 // ipv4_addr or ipv6_addr, by the set's family
	KeyProto                      // inet_proto
	KeyService                    // inet_service
)

// Kind is the datatype a field has in a set key.
func (f Field) Kind() KeyKind {
	switch f {
	case SrcAddr, DstAddr:
		return KeyAddr
	case L4Proto:
		return KeyProto
	}
	return KeyService
}

// IP protocol numbers used in keys.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// Ruleset is a whole table: it is applied as one unit.
type Ruleset struct {
	Table  string
	Sets   []Set   // in the order they are created (the compiler puts the most used first)
	Chains []Chain // base chains first, then in the order they are jumped to
	// Owners maps each counted rule's comment to the policies its
	// counter is attributed to (metrics use it).
	Owners map[string]Owner
}

// Owner attributes a counter.
type Owner struct {
	Accept   bool // true: packets this rule accepted; false: packets it dropped
	Policies []PolicyRef
}

// PolicyRef names a NetworkPolicy.
type PolicyRef struct{ Namespace, Name string }

func (p PolicyRef) String() string { return p.Namespace + "/" + p.Name }

// Set is a named set or verdict map.
type Set struct {
	Name     string
	Family   Family    // family of the KeyAddr part; FamilyAny when the key has none
	Key      []KeyKind // one part: a plain key; more: a concatenation
	Interval bool      // elements are ranges (flags interval)
	Verdicts bool      // a verdict map: each element carries a Verdict
	Elements []Element // sorted, non-overlapping
}

// Element is one set element; only the parts in the set's Key are used.
// Ranges are inclusive; in a set without Interval, From == To.
type Element struct {
	Addr    AddrRange
	Proto   uint8
	Port    PortRange
	Verdict Verdict // verdict maps only (Jump or Goto)
}

// AddrRange is an inclusive address range of one family.
type AddrRange struct{ From, To netip.Addr }

// PortRange is an inclusive port range.
type PortRange struct{ From, To uint16 }

// Chain is a regular chain, or a base chain when Hook is set.
type Chain struct {
	Name  string
	Hook  *Hook
	Rules []Rule
}

// Hook attaches a base chain to netfilter.
type Hook struct {
	Type     string // "filter" or "nat"
	Hook     string // "forward" or "postrouting"
	Priority int32
	Policy   VerdictKind // Accept or Drop
}

// Rule is a conjunction of matches followed by statements and a verdict.
type Rule struct {
	Family  Family  // meta nfproto, when not FamilyAny
	Iif     IfMatch // iifname, when Name is set
	Oif     IfMatch // oifname, when Name is set
	CtState CtState // ct state in this mask, when not zero
	// Matches compare single fields with a value or a range, inline;
	// they are tested before the Lookups.
	Matches []Match
	Lookups []Lookup
	// Counter counts matching packets: in the named counter object
	// CounterName(Comment) when the rule has a comment (all rules with the
	// same comment share it), else in the rule's own counter.
	Counter bool
	Log     *Log
	Verdict Verdict
	Comment string // names the counter (see Ruleset.Owners); at most 128 bytes
}

// IfMatch compares an interface name; a trailing "*" matches a prefix.
type IfMatch struct {
	Name   string
	Negate bool
}

// CtState is a mask of conntrack states.
type CtState uint32

// Bits as in the kernel's NF_CT_STATE_BIT.
const (
	CtInvalid     CtState = 1
	CtEstablished CtState = 2
	CtRelated     CtState = 4
	CtNew         CtState = 8
)

// Match compares one packet field with an inclusive range, written into
// the rule instead of a set: SrcAddr or DstAddr with Addr (the rule's
// Family must be the address's), L4Proto with Proto, DstPort with Port
// (after an L4Proto match of TCP, UDP or SCTP). A range that is one value
// is an equality.
type Match struct {
	Field Field
	Addr  AddrRange
	Proto uint8
	Port  PortRange
}

// CounterName is the name of the counter object that the counted rules
// with comment c share: c with every byte nft(8) does not accept in an
// unquoted name (letters, digits, "/", "-", "_", ".") replaced by "_",
// and "c_" in front unless it starts with a letter.
func CounterName(c string) string {
	b := []byte(c)
	for i, x := range b {
		ok := x >= 'a' && x <= 'z' || x >= 'A' && x <= 'Z' || x >= '0' && x <= '9' || x == '/' || x == '-' || x == '_' || x == '.'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 || !(b[0] >= 'a' && b[0] <= 'z' || b[0] >= 'A' && b[0] <= 'Z') {
		return "c_" + string(b)
	}
	return string(b)
}

// CounterNames lists the counter objects of rs: the comments of its
// counted rules in order of first use, with their names.
func CounterNames(rs Ruleset) (comments, names []string) {
	seen := map[string]bool{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Counter && r.Comment != "" && !seen[r.Comment] {
				seen[r.Comment] = true
				comments = append(comments, r.Comment)
				names = append(names, CounterName(r.Comment))
			}
		}
	}
	return comments, names
}

// Lookup matches when the tuple of Fields is (not, with Negate) in Set.
// For a verdict map it is used by a Verdict of kind VMap.
type Lookup struct {
	Fields []Field
	Set    string
	Negate bool
}

// Log logs matching packets through nf_log, rate limited.
type Log struct {
	Prefix string
	Rate   uint32 // packets per second
	Burst  uint32
}

// VerdictKind says what a rule does to the packet.
type VerdictKind uint8

const (
	// None continues with the next rule (a counter-only rule).
	None VerdictKind = iota
	Accept
	Drop
	Return
	Jump
	Goto
	// VMap looks the packet up in a verdict map and applies the
	// element's verdict; no match continues with the next rule.
	VMap
	Masquerade
	SNAT
)

// Verdict is a rule's verdict.
type Verdict struct {
	Kind  VerdictKind
	Chain string     // Jump, Goto
	Map   *Lookup    // VMap
	Addr  netip.Addr // SNAT
}

// Packet is the first packet of a connection being forwarded, as Eval and
// the reference evaluator see it.
type Packet struct {
	Iif, Oif string
	Src, Dst netip.Addr // unmapped
	Proto    uint8
	DstPort  uint16 // TCP, UDP and SCTP only
}
