package compile

import (
	"net/netip"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
)

// TestExpand checks how a policy rule's parts become rules: small parts
// inline (one rule per alternative), large or shared ones as one lookup,
// and never more than maxRules rules.
func TestExpand(t *testing.T) {
	addr := func(n int) *part {
		p := &part{count: n, toSet: func() model.Lookup { return model.Lookup{Set: "addrs"} }}
		for i := 0; i < n && n <= inlineMax; i++ {
			a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
			p.inline = append(p.inline, []model.Match{{Field: model.DstAddr, Addr: model.AddrRange{From: a, To: a}}})
		}
		return p
	}
	ports := func(n int) *part {
		p := addr(n)
		p.shared, p.toSet = true, func() model.Lookup { return model.Lookup{Set: "ports"} }
		return p
	}
	for _, tc := range []struct {
		name    string
		conds   []cond
		rules   int
		lookups []string // of the first rule
	}{
		{"no conditions: one rule", nil, 1, nil},
		{"4 addresses inline", []cond{{addr(4)}}, 4, nil},
		{"5 addresses: a set", []cond{{addr(5)}}, 1, []string{"addrs"}},
		{"one port inline", []cond{{addr(3)}, {ports(1)}}, 3, nil},
		{"two ports: the shared set", []cond{{addr(3)}, {ports(2)}}, 3, []string{"ports"}},
		{"3 x 3 > 8: the wider part becomes a set", []cond{{addr(3)}, {addr(3)}}, 3, []string{"addrs"}},
		{"2 x 4 = 8 stays inline", []cond{{addr(2)}, {addr(4)}}, 8, nil},
		{"a condition's parts add up", []cond{{addr(2), addr(9)}}, 3, nil},
	} {
		got := expand(model.Rule{Comment: "x"}, tc.conds)
		if len(got) != tc.rules {
			t.Errorf("%s: %d rules, want %d", tc.name, len(got), tc.rules)
			continue
		}
		var lk []string
		for _, l := range got[0].Lookups {
			lk = append(lk, l.Set)
		}
		if len(lk) != len(tc.lookups) || (len(lk) > 0 && lk[0] != tc.lookups[0]) {
			t.Errorf("%s: first rule looks up %v, want %v", tc.name, lk, tc.lookups)
		}
		for _, r := range got {
			if r.Comment != "x" {
				t.Errorf("%s: a rule lost the base rule's comment", tc.name)
			}
		}
	}
}
