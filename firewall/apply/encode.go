package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/anvil-metal/anvil/firewall/model"
)

// This file is the pure half of the translation: the bytes of set keys,
// the expansion of interval elements into the start/end elements the
// kernel stores, and the registers a lookup loads its fields into. It
// mirrors what nft(8) v1.0.x sends for the same ruleset text (checked with
// nft --debug=netlink) and builds on every OS.

// ErrInvalid marks a ruleset the applier cannot translate; nothing is sent
// to the kernel for it.
var ErrInvalid = errors.New("invalid ruleset")

// kernel register layout (linux/netfilter/nf_tables.h)
const (
	regVerdict = 0 // NFT_REG_VERDICT
	reg1       = 1 // NFT_REG_1, the first 128-bit data register
	reg32First = 8 // NFT_REG32_00, the same storage as NFT_REG_1
	// maxKeyLen is the kernel's limit for a concatenation's registers
	// (NFT_REG32_COUNT × 4 bytes).
	maxKeyLen = 64
)

// fieldLen is the byte length of a field's value in a register.
func fieldLen(f model.Field, fam model.Family) int {
	switch f {
	case model.SrcAddr, model.DstAddr:
		if fam == model.IPv6 {
			return 16
		}
		return 4
	case model.L4Proto:
		return 1
	}
	return 2 // DstPort
}

func kindLen(k model.KeyKind, fam model.Family) int {
	switch k {
	case model.KeyAddr:
		if fam == model.IPv6 {
			return 16
		}
		return 4
	case model.KeyProto:
		return 1
	}
	return 2
}

// pad4 rounds n up to the 32-bit register size: each part of a
// concatenation starts on a register boundary.
func pad4(n int) int { return (n + 3) &^ 3 }

// registers returns the register each field of a lookup is loaded into,
// numbered as nft numbers them: the fields sit in consecutive 32-bit
// registers from NFT_REG_1, and a field starting on a 128-bit boundary is
// addressed by its 128-bit register (NFT_REG_1..4), any other by its
// 32-bit one (NFT_REG32_00 + offset).
func registers(fields []model.Field, fam model.Family) ([]uint32, error) {
	regs := make([]uint32, len(fields))
	off := 0 // in 32-bit words
	for i, f := range fields {
		if off%4 == 0 {
			regs[i] = reg1 + uint32(off/4)
		} else {
			regs[i] = reg32First + uint32(off)
		}
		off += pad4(fieldLen(f, fam)) / 4
	}
	if off*4 > maxKeyLen {
		return nil, fmt.Errorf("%w: key of %d bytes exceeds the kernel's %d", ErrInvalid, off*4, maxKeyLen)
	}
	return regs, nil
}

// keyLen is the length of a set's key: a single part unpadded, each part of
// a concatenation padded to 4 bytes.
func keyLen(s model.Set) int {
	if len(s.Key) == 1 {
		return kindLen(s.Key[0], s.Family)
	}
	n := 0
	for _, k := range s.Key {
		n += pad4(kindLen(k, s.Family))
	}
	return n
}

// endpoint selects the low or high end of an element's ranges.
type endpoint bool

const (
	low  endpoint = false
	high endpoint = true
)

// key encodes one end of an element as the set's key: addresses and ports
// in network byte order, the protocol as one byte; in a concatenation each
// part is zero-padded to a multiple of 4 bytes.
func key(s model.Set, e model.Element, at endpoint) []byte {
	concat := len(s.Key) > 1
	b := make([]byte, 0, keyLen(s))
	for _, k := range s.Key {
		start := len(b)
		switch k {
		case model.KeyAddr:
			a := e.Addr.From
			if at == high {
				a = e.Addr.To
			}
			if s.Family == model.IPv6 {
				v := a.As16()
				b = append(b, v[:]...)
			} else {
				v := a.As4()
				b = append(b, v[:]...)
			}
		case model.KeyProto:
			b = append(b, e.Proto)
		case model.KeyService:
			p := e.Port.From
			if at == high {
				p = e.Port.To
			}
			b = binary.BigEndian.AppendUint16(b, p)
		}
		if concat {
			for len(b)-start < pad4(len(b)-start) {
				b = append(b, 0)
			}
		}
	}
	return b
}

// elem is one element as the kernel stores it.
type elem struct {
	Key    []byte
	KeyEnd []byte // concatenated interval sets: the inclusive upper end
	// End marks the exclusive end of an interval in a plain interval set
	// (NFT_SET_ELEM_INTERVAL_END); it carries no verdict.
	End     bool
	Verdict *model.Verdict // verdict maps: Jump or Goto
}

// elements expands a set's elements into what the kernel stores:
//   - plain sets and maps: one element per key;
//   - concatenated interval sets: one element with Key and KeyEnd (the
//     pipapo backend);
//   - plain interval sets: a start element at From and an interval-end
//     element at To+1, none when To is the highest value of its type (the
//     interval is open); like nft, an interval-end element at zero comes
//     first when no interval starts at zero.
func elements(s model.Set) ([]elem, error) {
	if err := checkSet(s); err != nil {
		return nil, err
	}
	concat := len(s.Key) > 1
	out := make([]elem, 0, len(s.Elements)*2+1)
	if s.Interval && !concat && len(s.Elements) > 0 {
		lead := true
		for _, e := range s.Elements {
			if isZero(key(s, e, low)) {
				lead = false
				break
			}
		}
		if lead {
			out = append(out, elem{Key: make([]byte, keyLen(s)), End: true})
		}
	}
	for i := range s.Elements {
		e := s.Elements[i]
		var v *model.Verdict
		if s.Verdicts {
			v = &s.Elements[i].Verdict
		}
		start := elem{Key: key(s, e, low), Verdict: v}
		switch {
		case !s.Interval:
			out = append(out, start)
		case concat:
			start.KeyEnd = key(s, e, high)
			out = append(out, start)
		default:
			out = append(out, start)
			if end, ok := successor(key(s, e, high)); ok {
				out = append(out, elem{Key: end, End: true})
			}
		}
	}
	return out, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// successor returns the big-endian number b+1, or false when b is the
// highest value of its width.
func successor(b []byte) ([]byte, bool) {
	out := append([]byte(nil), b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

// checkSet validates what the translation relies on; the kernel checks the
// rest (names, overlaps, sizes) and rejects the whole batch.
func checkSet(s model.Set) error {
	if len(s.Key) == 0 {
		return fmt.Errorf("%w: set %q has no key", ErrInvalid, s.Name)
	}
	if len(s.Key) > 5 {
		return fmt.Errorf("%w: set %q: a concatenation of %d types (at most 5)", ErrInvalid, s.Name, len(s.Key))
	}
	addr := false
	for _, k := range s.Key {
		switch k {
		case model.KeyAddr:
			addr = true
		case model.KeyProto, model.KeyService:
		default:
			return fmt.Errorf("%w: set %q: unknown key kind %d", ErrInvalid, s.Name, k)
		}
	}
	if addr && s.Family != model.IPv4 && s.Family != model.IPv6 {
		return fmt.Errorf("%w: set %q has an address key but family %s", ErrInvalid, s.Name, s.Family)
	}
	if keyLen(s) > maxKeyLen {
		return fmt.Errorf("%w: set %q: key of %d bytes exceeds the kernel's %d", ErrInvalid, s.Name, keyLen(s), maxKeyLen)
	}
	for i, e := range s.Elements {
		if err := checkElement(s, e, addr); err != nil {
			return fmt.Errorf("%w: set %q element %d: %v", ErrInvalid, s.Name, i, err)
		}
	}
	return nil
}

func checkElement(s model.Set, e model.Element, addr bool) error {
	if addr {
		is4 := s.Family == model.IPv4
		for _, a := range []netip.Addr{e.Addr.From, e.Addr.To} {
			if !a.IsValid() || a.Is4() != is4 || a.Is4In6() {
				return fmt.Errorf("address %v is not a plain %s address", a, s.Family)
			}
		}
		if e.Addr.To.Less(e.Addr.From) {
			return fmt.Errorf("address range %v-%v is reversed", e.Addr.From, e.Addr.To)
		}
		if !s.Interval && e.Addr.From != e.Addr.To {
			return fmt.Errorf("address range %v-%v in a set without flags interval", e.Addr.From, e.Addr.To)
		}
	}
	for _, k := range s.Key {
		if k == model.KeyService {
			if e.Port.To < e.Port.From {
				return fmt.Errorf("port range %d-%d is reversed", e.Port.From, e.Port.To)
			}
			if !s.Interval && e.Port.From != e.Port.To {
				return fmt.Errorf("port range %d-%d in a set without flags interval", e.Port.From, e.Port.To)
			}
		}
	}
	if s.Verdicts && e.Verdict.Kind != model.Jump && e.Verdict.Kind != model.Goto {
		return fmt.Errorf("verdict map element needs jump or goto, not kind %d", e.Verdict.Kind)
	}
	if s.Verdicts && e.Verdict.Chain == "" {
		return errors.New("verdict map element names no chain")
	}
	return nil
}

// lookupPlan is how a rule loads the fields of a lookup: what to load into
// which register, and whether the lookup needs a meta nfproto dependency
// (address fields in a table of family inet).
type lookupPlan struct {
	Set    *model.Set
	Regs   []uint32
	Family model.Family // the address family the loads assume; FamilyAny when none
}

func planLookup(sets map[string]*model.Set, l model.Lookup) (lookupPlan, error) {
	s, ok := sets[l.Set]
	if !ok {
		return lookupPlan{}, fmt.Errorf("%w: lookup in unknown set %q", ErrInvalid, l.Set)
	}
	if len(l.Fields) != len(s.Key) {
		return lookupPlan{}, fmt.Errorf("%w: lookup of %d fields in set %q with a key of %d parts", ErrInvalid, len(l.Fields), l.Set, len(s.Key))
	}
	fam := model.FamilyAny
	for i, f := range l.Fields {
		if f < model.SrcAddr || f > model.DstPort {
			return lookupPlan{}, fmt.Errorf("%w: lookup in set %q: unknown field %d", ErrInvalid, l.Set, f)
		}
		if f.Kind() != s.Key[i] {
			return lookupPlan{}, fmt.Errorf("%w: lookup in set %q: field %d does not match the key's part %d", ErrInvalid, l.Set, i, i)
		}
		if f.Kind() == model.KeyAddr {
			fam = s.Family
		}
	}
	regs, err := registers(l.Fields, s.Family)
	if err != nil {
		return lookupPlan{}, fmt.Errorf("lookup in set %q: %w", l.Set, err)
	}
	return lookupPlan{Set: s, Regs: regs, Family: fam}, nil
}

// ifname encodes an interface match as nft does: the name NUL-padded to
// IFNAMSIZ (16) bytes, or for a trailing "*" only the prefix, compared
// without its terminating NUL.
func ifname(name string) ([]byte, error) {
	const ifnamsiz = 16
	if n, ok := strings.CutSuffix(name, "*"); ok {
		if n == "" || len(n) >= ifnamsiz {
			return nil, fmt.Errorf("%w: interface pattern %q: the prefix must be 1..%d bytes", ErrInvalid, name, ifnamsiz-1)
		}
		return []byte(n), nil
	}
	if len(name) >= ifnamsiz {
		return nil, fmt.Errorf("%w: interface name %q is longer than %d bytes", ErrInvalid, name, ifnamsiz-1)
	}
	b := make([]byte, ifnamsiz)
	copy(b, name)
	return b, nil
}

// matchPlan is how one inline Match is loaded and compared, the way nft
// does it (checked with nft --debug=netlink): an address prefix that ends
// on a byte boundary loads only its bytes and compares them; another
// prefix loads the whole address, masks it and compares; any other range
// compares with >= and <=; a single value compares for equality. The
// protocol is meta l4proto, one byte.
type matchPlan struct {
	Family    model.Family // address matches: the packet family they need
	Meta      bool         // meta l4proto instead of a payload load
	Transport bool         // payload base: transport header, else network
	Offset    uint32
	Len       uint32
	Mask      []byte // bitwise mask before the comparison, when set
	Eq        []byte // compare for equality, when set
	Lo, Hi    []byte // else compare >= Lo and <= Hi
}

func planMatch(m model.Match) (matchPlan, error) {
	switch m.Field {
	case model.SrcAddr, model.DstAddr:
		from, to := m.Addr.From, m.Addr.To
		if !from.IsValid() || !to.IsValid() || from.Is4() != to.Is4() || from.Is4In6() || to.Is4In6() || to.Less(from) {
			return matchPlan{}, fmt.Errorf("%w: address match %v-%v", ErrInvalid, from, to)
		}
		p := matchPlan{Family: model.IPv4, Offset: 12, Len: 4}
		if from.Is6() {
			p.Family, p.Offset, p.Len = model.IPv6, 8, 16
		}
		if m.Field == model.DstAddr {
			p.Offset += p.Len
		}
		a, b := from.AsSlice(), to.AsSlice()
		if from == to {
			p.Eq = a
			return p, nil
		}
		if pfx, ok := model.AsPrefix(m.Addr); ok {
			bits := pfx.Bits()
			if bits%8 == 0 {
				p.Len = uint32(bits / 8)
				p.Eq = a[:bits/8]
				return p, nil
			}
			mask := make([]byte, len(a))
			for i := 0; i < bits; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			p.Mask, p.Eq = mask, a
			return p, nil
		}
		p.Lo, p.Hi = a, b
		return p, nil
	case model.L4Proto:
		return matchPlan{Meta: true, Len: 1, Eq: []byte{m.Proto}}, nil
	case model.DstPort:
		if m.Port.To < m.Port.From {
			return matchPlan{}, fmt.Errorf("%w: port match %d-%d", ErrInvalid, m.Port.From, m.Port.To)
		}
		p := matchPlan{Transport: true, Offset: 2, Len: 2}
		lo, hi := binary.BigEndian.AppendUint16(nil, m.Port.From), binary.BigEndian.AppendUint16(nil, m.Port.To)
		if m.Port.From == m.Port.To {
			p.Eq = lo
		} else {
			p.Lo, p.Hi = lo, hi
		}
		return p, nil
	}
	return matchPlan{}, fmt.Errorf("%w: match of unknown field %d", ErrInvalid, m.Field)
}
