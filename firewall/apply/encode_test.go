package apply

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
)

func TestRegisters(t *testing.T) {
	// Expected values are what nft 1.0.6 printed with --debug=netlink for
	// the same lookups (reg 1 is the 128-bit NFT_REG_1, 9.. are 32-bit).
	for _, tc := range []struct {
		name   string
		fields []model.Field
		fam    model.Family
		want   []uint32
	}{
		{"ip saddr", []model.Field{model.SrcAddr}, model.IPv4, []uint32{1}},
		{"th dport", []model.Field{model.DstPort}, model.FamilyAny, []uint32{1}},
		{"ip daddr . meta l4proto . th dport", []model.Field{model.DstAddr, model.L4Proto, model.DstPort}, model.IPv4, []uint32{1, 9, 10}},
		{"ip6 daddr . meta l4proto . th dport", []model.Field{model.DstAddr, model.L4Proto, model.DstPort}, model.IPv6, []uint32{1, 2, 13}},
		{"meta l4proto . th dport", []model.Field{model.L4Proto, model.DstPort}, model.FamilyAny, []uint32{1, 9}},
		{"ip saddr . th dport", []model.Field{model.SrcAddr, model.DstPort}, model.IPv4, []uint32{1, 9}},
		{"ip6 saddr . ip6 daddr", []model.Field{model.SrcAddr, model.DstAddr}, model.IPv6, []uint32{1, 2}},
		{"ip6 saddr . ip6 daddr . meta l4proto . th dport", []model.Field{model.SrcAddr, model.DstAddr, model.L4Proto, model.DstPort}, model.IPv6, []uint32{1, 2, 3, 17}},
	} {
		got, err := registers(tc.fields, tc.fam)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: registers %v, want %v", tc.name, got, tc.want)
		}
	}
	// Five IPv6 addresses need 80 bytes: more than the registers hold.
	many := []model.Field{model.SrcAddr, model.DstAddr, model.SrcAddr, model.DstAddr, model.SrcAddr}
	if _, err := registers(many, model.IPv6); !errors.Is(err, ErrInvalid) {
		t.Errorf("80-byte key: err %v, want ErrInvalid", err)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func rng(from, to string) model.AddrRange { return model.AddrRange{From: addr(from), To: addr(to)} }

// dump renders elements like nft --debug=netlink does, for readable
// expectations: key[-keyend][ end][ :verdict].
func dump(es []elem) string {
	var parts []string
	for _, e := range es {
		s := hex.EncodeToString(e.Key)
		if e.KeyEnd != nil {
			s += "-" + hex.EncodeToString(e.KeyEnd)
		}
		if e.End {
			s += " end"
		}
		if e.Verdict != nil {
			s += " :" + map[model.VerdictKind]string{model.Jump: "jump ", model.Goto: "goto "}[e.Verdict.Kind] + e.Verdict.Chain
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func TestElements(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  model.Set
		want string
	}{{
		// As nft: an end element at 0 first, starts at From, ends at
		// To+1, adjacent ranges keep both end and start, and no end
		// after the highest address.
		name: "ipv4 interval",
		set: model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}, Interval: true, Elements: []model.Element{
			{Addr: rng("10.0.0.0", "10.127.255.255")},
			{Addr: rng("10.128.0.0", "10.255.255.255")},
			{Addr: rng("192.168.1.1", "192.168.1.1")},
			{Addr: rng("255.255.255.0", "255.255.255.255")},
		}},
		want: "00000000 end, 0a000000, 0a800000 end, 0a800000, 0b000000 end, c0a80101, c0a80102 end, ffffff00",
	}, {
		name: "interval starting at zero",
		set: model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}, Interval: true, Elements: []model.Element{
			{Addr: rng("0.0.0.0", "127.255.255.255")},
		}},
		want: "00000000, 80000000 end",
	}, {
		name: "ipv6 interval",
		set: model.Set{Family: model.IPv6, Key: []model.KeyKind{model.KeyAddr}, Interval: true, Elements: []model.Element{
			{Addr: rng("fd00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
		}},
		want: "00000000000000000000000000000000 end, fd000000000000000000000000000000, fe000000000000000000000000000000 end",
	}, {
		name: "ports interval up to 65535",
		set: model.Set{Key: []model.KeyKind{model.KeyService}, Interval: true, Elements: []model.Element{
			{Port: model.PortRange{From: 80, To: 80}},
			{Port: model.PortRange{From: 8000, To: 65535}},
		}},
		want: "0000 end, 0050, 0051 end, 1f40",
	}, {
		// The concatenation pads each part to 4 bytes; intervals are
		// Key and KeyEnd (what nft sends for the pipapo backend).
		name: "ipv4 . inet_proto . inet_service interval",
		set: model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr, model.KeyProto, model.KeyService}, Interval: true, Elements: []model.Element{
			{Addr: rng("10.0.0.0", "10.255.255.255"), Proto: model.ProtoTCP, Port: model.PortRange{From: 80, To: 90}},
			{Addr: rng("1.2.3.4", "1.2.3.4"), Proto: model.ProtoUDP, Port: model.PortRange{From: 53, To: 53}},
		}},
		want: "0a000000" + "06000000" + "00500000" + "-" + "0affffff" + "06000000" + "005a0000" + ", " +
			"01020304" + "11000000" + "00350000" + "-" + "01020304" + "11000000" + "00350000",
	}, {
		name: "inet_proto . inet_service plain",
		set: model.Set{Key: []model.KeyKind{model.KeyProto, model.KeyService}, Elements: []model.Element{
			{Proto: model.ProtoTCP, Port: model.PortRange{From: 80, To: 80}},
		}},
		want: "06000000" + "00500000",
	}, {
		name: "verdict map",
		set: model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}, Verdicts: true, Elements: []model.Element{
			{Addr: rng("10.1.1.1", "10.1.1.1"), Verdict: model.Verdict{Kind: model.Goto, Chain: "g0"}},
			{Addr: rng("10.1.1.2", "10.1.1.2"), Verdict: model.Verdict{Kind: model.Jump, Chain: "g1"}},
		}},
		want: "0a010101 :goto g0, 0a010102 :jump g1",
	}, {
		name: "interval verdict map",
		set: model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}, Verdicts: true, Interval: true, Elements: []model.Element{
			{Addr: rng("10.1.0.0", "10.1.255.255"), Verdict: model.Verdict{Kind: model.Jump, Chain: "sub"}},
			{Addr: rng("10.2.0.0", "10.2.255.255"), Verdict: model.Verdict{Kind: model.Goto, Chain: "sub"}},
		}},
		want: "00000000 end, 0a010000 :jump sub, 0a020000 end, 0a020000 :goto sub, 0a030000 end",
	}, {
		name: "empty interval set",
		set:  model.Set{Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}, Interval: true},
		want: "",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set.Name = "s"
			got, err := elements(tc.set)
			if err != nil {
				t.Fatal(err)
			}
			if d := dump(got); d != tc.want {
				t.Errorf("elements\n got %s\nwant %s", d, tc.want)
			}
		})
	}
}

func TestElementsRejected(t *testing.T) {
	v4 := []model.KeyKind{model.KeyAddr}
	for _, tc := range []struct {
		name string
		set  model.Set
	}{
		{"no key", model.Set{}},
		{"address key without family", model.Set{Key: v4}},
		{"v6 address in v4 set", model.Set{Family: model.IPv4, Key: v4, Elements: []model.Element{{Addr: rng("::1", "::1")}}}},
		{"mapped address", model.Set{Family: model.IPv6, Key: v4, Elements: []model.Element{{Addr: rng("::ffff:1.2.3.4", "::ffff:1.2.3.4")}}}},
		{"range without interval", model.Set{Family: model.IPv4, Key: v4, Elements: []model.Element{{Addr: rng("10.0.0.0", "10.0.0.9")}}}},
		{"reversed range", model.Set{Family: model.IPv4, Key: v4, Interval: true, Elements: []model.Element{{Addr: rng("10.0.0.9", "10.0.0.0")}}}},
		{"reversed ports", model.Set{Key: []model.KeyKind{model.KeyService}, Interval: true, Elements: []model.Element{{Port: model.PortRange{From: 9, To: 8}}}}},
		{"map element without chain", model.Set{Family: model.IPv4, Key: v4, Verdicts: true, Elements: []model.Element{{Addr: rng("10.0.0.1", "10.0.0.1"), Verdict: model.Verdict{Kind: model.Jump}}}}},
		{"map element accept", model.Set{Family: model.IPv4, Key: v4, Verdicts: true, Elements: []model.Element{{Addr: rng("10.0.0.1", "10.0.0.1"), Verdict: model.Verdict{Kind: model.Accept}}}}},
	} {
		tc.set.Name = "s"
		if _, err := elements(tc.set); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestSuccessor(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"00ff", "0100", true},
		{"0aff ffff", "0b00 0000", true},
		{"ffff", "", false},
		{"ffffffff", "", false},
	} {
		in, _ := hex.DecodeString(strings.ReplaceAll(tc.in, " ", ""))
		got, ok := successor(in)
		want, _ := hex.DecodeString(strings.ReplaceAll(tc.want, " ", ""))
		if ok != tc.ok || (ok && !bytes.Equal(got, want)) {
			t.Errorf("successor(%s) = %x, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIfname(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // hex; "" for an error
	}{
		{"cluster0", "636c757374657230" + "0000000000000000"},
		{"vlan*", "766c616e"},
		{"eth0", "65746830" + strings.Repeat("00", 12)},
		{"exactly15chars_", "65786163746c7931356368617273" + "5f" + "00"},
		{"sixteen_chars___", ""},
		{"*", ""},
	} {
		got, err := ifname(tc.in)
		switch {
		case tc.want == "" && !errors.Is(err, ErrInvalid):
			t.Errorf("ifname(%q): err %v, want ErrInvalid", tc.in, err)
		case tc.want != "" && hex.EncodeToString(got) != tc.want:
			t.Errorf("ifname(%q) = %x (%v), want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestPlanLookup(t *testing.T) {
	sets := map[string]*model.Set{
		"a4": {Name: "a4", Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr}},
		"pp": {Name: "pp", Key: []model.KeyKind{model.KeyProto, model.KeyService}},
	}
	lp, err := planLookup(sets, model.Lookup{Fields: []model.Field{model.DstAddr}, Set: "a4"})
	if err != nil || lp.Family != model.IPv4 {
		t.Errorf("ip daddr @a4: %+v, %v; want family ip", lp, err)
	}
	lp, err = planLookup(sets, model.Lookup{Fields: []model.Field{model.L4Proto, model.DstPort}, Set: "pp"})
	if err != nil || lp.Family != model.FamilyAny {
		t.Errorf("meta l4proto . th dport @pp: %+v, %v; want no family", lp, err)
	}
	for _, bad := range []model.Lookup{
		{Fields: []model.Field{model.DstAddr}, Set: "missing"},
		{Fields: []model.Field{model.DstPort}, Set: "a4"},
		{Fields: []model.Field{model.L4Proto}, Set: "pp"},
	} {
		if _, err := planLookup(sets, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err %v, want ErrInvalid", bad, err)
		}
	}
}

// TestPlanMatch checks each inline match against the expressions nft
// v1.0.6 generates for the same text (nft --debug=netlink add rule ...).
func TestPlanMatch(t *testing.T) {
	a := netip.MustParseAddr
	rng := func(from, to string) model.AddrRange { return model.AddrRange{From: a(from), To: a(to)} }
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		nft  string
		m    model.Match
		want matchPlan
	}{
		// [ payload load 3b @ network header + 16 => reg 1 ] [ cmp eq reg 1 0x0000000a ]
		{"ip daddr 10.0.0.0/24", model.Match{Field: model.DstAddr, Addr: rng("10.0.0.0", "10.0.0.255")},
			matchPlan{Family: model.IPv4, Offset: 16, Len: 3, Eq: h("0a0000")}},
		// [ payload load 4b @ network header + 16 ] [ bitwise reg 1 = ( reg 1 & 0xf0ffffff ) ^ 0 ] [ cmp eq reg 1 0x1000000a ]
		{"ip daddr 10.0.0.16/28", model.Match{Field: model.DstAddr, Addr: rng("10.0.0.16", "10.0.0.31")},
			matchPlan{Family: model.IPv4, Offset: 16, Len: 4, Mask: h("fffffff0"), Eq: h("0a000010")}},
		// [ payload load 4b @ network header + 16 ] [ cmp gte reg 1 0x0500000a ] [ cmp lte reg 1 0x0900000a ]
		{"ip daddr 10.0.0.5-10.0.0.9", model.Match{Field: model.DstAddr, Addr: rng("10.0.0.5", "10.0.0.9")},
			matchPlan{Family: model.IPv4, Offset: 16, Len: 4, Lo: h("0a000005"), Hi: h("0a000009")}},
		// [ payload load 4b @ network header + 12 ] [ cmp eq reg 1 0x0500000a ]
		{"ip saddr 10.0.0.5", model.Match{Field: model.SrcAddr, Addr: rng("10.0.0.5", "10.0.0.5")},
			matchPlan{Family: model.IPv4, Offset: 12, Len: 4, Eq: h("0a000005")}},
		// [ payload load 6b @ network header + 24 ] [ cmp eq reg 1 0xb80d0120 0x00000100 ]
		{"ip6 daddr 2001:db8:1::/48", model.Match{Field: model.DstAddr, Addr: rng("2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff")},
			matchPlan{Family: model.IPv6, Offset: 24, Len: 6, Eq: h("20010db80001")}},
		// [ payload load 16b @ network header + 8 ] [ bitwise ... & 0xffffffff 0x0000feff 0 0 ] [ cmp eq ... ]
		{"ip6 saddr 2001:db8::/47", model.Match{Field: model.SrcAddr, Addr: rng("2001:db8::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff")},
			matchPlan{Family: model.IPv6, Offset: 8, Len: 16, Mask: h("fffffffffffe00000000000000000000"), Eq: h("20010db8000000000000000000000000")}},
		// [ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ]
		{"meta l4proto tcp", model.Match{Field: model.L4Proto, Proto: model.ProtoTCP}, matchPlan{Meta: true, Len: 1, Eq: []byte{6}}},
		// [ payload load 2b @ transport header + 2 ] [ cmp eq reg 1 0x0000bb01 ]
		{"th dport 443", model.Match{Field: model.DstPort, Port: model.PortRange{From: 443, To: 443}},
			matchPlan{Transport: true, Offset: 2, Len: 2, Eq: h("01bb")}},
		// [ cmp gte reg 1 0x0000b80b ] [ cmp lte reg 1 0x0000c20b ]
		{"th dport 3000-3010", model.Match{Field: model.DstPort, Port: model.PortRange{From: 3000, To: 3010}},
			matchPlan{Transport: true, Offset: 2, Len: 2, Lo: h("0bb8"), Hi: h("0bc2")}},
	} {
		got, err := planMatch(tc.m)
		if err != nil {
			t.Errorf("%s: %v", tc.nft, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.nft, got, tc.want)
		}
	}
	for _, m := range []model.Match{
		{Field: model.DstAddr},
		{Field: model.DstAddr, Addr: rng("10.0.0.9", "10.0.0.5")},
		{Field: model.DstAddr, Addr: rng("10.0.0.1", "2001:db8::1")},
		{Field: model.SrcAddr, Addr: rng("::ffff:10.0.0.1", "::ffff:10.0.0.1")},
		{Field: model.DstPort, Port: model.PortRange{From: 9, To: 1}},
		{Field: 99},
	} {
		if _, err := planMatch(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("planMatch(%+v): err %v, want ErrInvalid", m, err)
		}
	}
}
