package compile

import (
	"net/netip"
	"sort"

	"github.com/anvil-metal/anvil/firewall/model"
)

// addrRanges is a set of addresses of one family as sorted, disjoint,
// non-adjacent inclusive ranges.
type addrRanges []model.AddrRange

func prefixRange(p netip.Prefix) model.AddrRange {
	p = p.Masked()
	return model.AddrRange{From: p.Addr(), To: model.LastAddr(p)}
}

// normalize sorts and merges overlapping or adjacent ranges.
func (rs addrRanges) normalize() addrRanges {
	if len(rs) == 0 {
		return nil
	}
	s := append(addrRanges(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].From.Less(s[j].From) })
	out := addrRanges{s[0]}
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		next := last.To.Next()
		if !next.IsValid() || r.From.Compare(next) <= 0 {
			if r.To.Compare(last.To) > 0 {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtract removes the (normalized) ranges cut from the (normalized) rs.
func (rs addrRanges) subtract(cut addrRanges) addrRanges {
	var out addrRanges
	for _, r := range rs {
		cur := r
		alive := true
		for _, c := range cut {
			if !alive {
				break
			}
			if c.To.Less(cur.From) || cur.To.Less(c.From) {
				continue
			}
			if cur.From.Less(c.From) {
				out = append(out, model.AddrRange{From: cur.From, To: c.From.Prev()})
			}
			if c.To.Less(cur.To) {
				cur.From = c.To.Next()
			} else {
				alive = false
			}
		}
		if alive {
			out = append(out, cur)
		}
	}
	return out
}

// portRange is a protocol with an inclusive port range.
type portRange struct {
	proto    uint8
	from, to uint16
}

// normalizePorts sorts by protocol and port and merges overlaps per
// protocol.
func normalizePorts(ps []portRange) []portRange {
	if len(ps) == 0 {
		return nil
	}
	s := append([]portRange(nil), ps...)
	sort.Slice(s, func(i, j int) bool {
		if s[i].proto != s[j].proto {
			return s[i].proto < s[j].proto
		}
		return s[i].from < s[j].from
	})
	out := []portRange{s[0]}
	for _, p := range s[1:] {
		last := &out[len(out)-1]
		if p.proto == last.proto && uint32(p.from) <= uint32(last.to)+1 {
			if p.to > last.to {
				last.to = p.to
			}
			continue
		}
		out = append(out, p)
	}
	return out
}
