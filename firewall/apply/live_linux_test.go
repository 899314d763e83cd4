package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/internal/policygen"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// Live tests: each creates its own network namespaces, programs nftables
// there and deletes them. go test -race ./firewall/apply/ (as root).

func newApplier(t *testing.T, ns netnstest.NS) *Applier {
	t.Helper()
	a, err := New(WithNetNS(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func prefix(s string) model.AddrRange {
	p := netip.MustParsePrefix(s)
	return model.AddrRange{From: p.Masked().Addr(), To: model.LastAddr(p)}
}

func one(s string) model.AddrRange { return model.AddrRange{From: addr(s), To: addr(s)} }

func ports(from, to uint16) model.PortRange { return model.PortRange{From: from, To: to} }

func lookup(set string, fields ...model.Field) model.Lookup {
	return model.Lookup{Fields: fields, Set: set}
}

func verdict(k model.VerdictKind) model.Verdict { return model.Verdict{Kind: k} }

func jump(c string) model.Verdict { return model.Verdict{Kind: model.Jump, Chain: c} }

func gotoChain(c string) model.Verdict { return model.Verdict{Kind: model.Goto, Chain: c} }

var (
	keyAddr      = []model.KeyKind{model.KeyAddr}
	keyProtoPort = []model.KeyKind{model.KeyProto, model.KeyService}
	keyAddrPP    = []model.KeyKind{model.KeyAddr, model.KeyProto, model.KeyService}
	fieldsDstPP  = []model.Field{model.DstAddr, model.L4Proto, model.DstPort}
)

// realistic is a ruleset shaped like the compiler's, built by hand so that
// it exercises every construct the applier translates: v4 and v6 interval
// sets (adjacent ranges, a range up to the highest address), concatenated
// interval sets ipv4_addr . inet_proto . inet_service and inet_proto .
// inet_service (with 0-65535), a plain concatenation, plain and interval
// verdict maps, jump and goto chains, negated lookups and interface
// matches, interface prefixes, ct state, log with limit, counters with
// comments, masquerade and snat for both families.
func realistic(table string) model.Ruleset {
	ll := &model.Log{Prefix: "anvil drop: ", Rate: 10, Burst: 20}
	return model.Ruleset{
		Table: table,
		Sets: []model.Set{
			{Name: "cidr_map", Family: model.IPv4, Key: keyAddr, Interval: true, Verdicts: true, Elements: []model.Element{
				{Addr: prefix("10.8.0.0/16"), Verdict: jump("eg_a")},
				{Addr: prefix("10.9.0.0/16"), Verdict: gotoChain("eg_b")},
			}},
			{Name: "egress_pods4", Family: model.IPv4, Key: keyAddr, Verdicts: true, Elements: []model.Element{
				{Addr: one("10.1.1.1"), Verdict: gotoChain("egress_g0")},
				{Addr: one("10.1.1.2"), Verdict: gotoChain("egress_g1")},
			}},
			{Name: "egress_pods6", Family: model.IPv6, Key: keyAddr, Verdicts: true, Elements: []model.Element{
				{Addr: one("fd00:1::1"), Verdict: gotoChain("egress_g0")},
			}},
			{Name: "lb4", Family: model.IPv4, Key: keyAddrPP, Elements: []model.Element{
				{Addr: one("198.51.100.7"), Proto: model.ProtoTCP, Port: ports(443, 443)},
				{Addr: one("198.51.100.7"), Proto: model.ProtoUDP, Port: ports(53, 53)},
			}},
			{Name: "named4", Family: model.IPv4, Key: keyAddrPP, Interval: true, Elements: []model.Element{
				{Addr: prefix("10.1.0.0/16"), Proto: model.ProtoUDP, Port: ports(1000, 2000)},
				{Addr: one("10.1.1.1"), Proto: model.ProtoTCP, Port: ports(8080, 8080)},
			}},
			{Name: "named6", Family: model.IPv6, Key: keyAddrPP, Interval: true, Elements: []model.Element{
				{Addr: one("fd00:1::1"), Proto: model.ProtoTCP, Port: ports(8080, 8080)},
				{Addr: prefix("fd00:2::/64"), Proto: model.ProtoSCTP, Port: ports(1, 65535)},
			}},
			{Name: "peers4", Family: model.IPv4, Key: keyAddr, Interval: true, Elements: []model.Element{
				{Addr: prefix("10.0.0.0/9")},
				{Addr: prefix("10.128.0.0/9")},
				{Addr: prefix("192.0.2.0/25")},
				{Addr: model.AddrRange{From: addr("198.51.100.10"), To: addr("198.51.100.20")}},
				{Addr: one("203.0.113.7")},
				{Addr: prefix("240.0.0.0/4")},
			}},
			{Name: "peers6", Family: model.IPv6, Key: keyAddr, Interval: true, Elements: []model.Element{
				{Addr: prefix("2001:db8::/32")},
				{Addr: one("2001:db9::1")},
				{Addr: prefix("ff00::/8")},
			}},
			{Name: "ports_0", Key: keyProtoPort, Interval: true, Elements: []model.Element{
				{Proto: model.ProtoTCP, Port: ports(443, 443)},
				{Proto: model.ProtoTCP, Port: ports(8000, 8100)},
				{Proto: model.ProtoUDP, Port: ports(53, 53)},
				{Proto: model.ProtoSCTP, Port: ports(0, 65535)},
			}},
			{Name: "protos", Key: []model.KeyKind{model.KeyProto}, Elements: []model.Element{
				{Proto: model.ProtoTCP}, {Proto: model.ProtoUDP},
			}},
			{Name: "svc", Key: []model.KeyKind{model.KeyService}, Interval: true, Elements: []model.Element{
				{Port: ports(80, 80)}, {Port: ports(8000, 9000)},
			}},
		},
		Chains: []model.Chain{
			{Name: "forward", Hook: &model.Hook{Type: "filter", Hook: "forward", Priority: 0, Policy: model.Drop}, Rules: []model.Rule{
				{CtState: model.CtEstablished | model.CtRelated, Verdict: verdict(model.Accept)},
				{CtState: model.CtInvalid, Verdict: verdict(model.Drop)},
				{Iif: model.IfMatch{Name: "cluster0"}, Verdict: jump("from_cluster")},
				{Iif: model.IfMatch{Name: "vlan*"}, Verdict: jump("from_cluster")},
				{Oif: model.IfMatch{Name: "cluster0"}, Verdict: jump("to_cluster")},
			}},
			{Name: "postrouting", Hook: &model.Hook{Type: "nat", Hook: "postrouting", Priority: 100, Policy: model.Accept}, Rules: []model.Rule{
				{Iif: model.IfMatch{Name: "cluster0"}, Oif: model.IfMatch{Name: "cluster0", Negate: true}, Verdict: jump("nat_egress")},
			}},
			{Name: "nat_egress", Rules: []model.Rule{
				{Oif: model.IfMatch{Name: "vlan*", Negate: true}, Family: model.IPv4, Verdict: verdict(model.Masquerade)},
				{Family: model.IPv4, Verdict: model.Verdict{Kind: model.SNAT, Addr: addr("192.0.2.1")}},
				{Family: model.IPv6, Verdict: model.Verdict{Kind: model.SNAT, Addr: addr("2001:db8:ff::1")}},
			}},
			{Name: "from_cluster", Rules: []model.Rule{
				{Oif: model.IfMatch{Name: "cluster0"}, Verdict: verdict(model.Return)},
				{Verdict: gotoChain("egress")},
			}},
			{Name: "to_cluster", Rules: []model.Rule{
				{Verdict: gotoChain("ingress")},
			}},
			{Name: "egress", Rules: []model.Rule{
				{Family: model.IPv4, Verdict: model.Verdict{Kind: model.VMap, Map: &model.Lookup{Fields: []model.Field{model.SrcAddr}, Set: "egress_pods4"}}},
				// no explicit family: the applier adds meta nfproto ipv6
				{Verdict: model.Verdict{Kind: model.VMap, Map: &model.Lookup{Fields: []model.Field{model.SrcAddr}, Set: "egress_pods6"}}},
				{Log: ll},
				{Counter: true, Verdict: verdict(model.Drop), Comment: "default egress"},
			}},
			{Name: "ingress", Rules: []model.Rule{
				{Family: model.IPv4, Lookups: []model.Lookup{{Fields: fieldsDstPP, Set: "lb4"}}, Counter: true, Verdict: verdict(model.Accept), Comment: "loadbalancer ingress"},
				{Verdict: model.Verdict{Kind: model.VMap, Map: &model.Lookup{Fields: []model.Field{model.DstAddr}, Set: "cidr_map"}}},
				{Counter: true, Verdict: verdict(model.Accept), Comment: "default ingress"},
			}},
			{Name: "egress_g0", Rules: []model.Rule{
				{Verdict: jump("eg_a")},
				{Log: &model.Log{Prefix: "anvil drop egress g0: ", Rate: 5, Burst: 7}},
				{Counter: true, Verdict: verdict(model.Drop), Comment: "drop egress g0"},
			}},
			{Name: "egress_g1", Rules: []model.Rule{
				{Verdict: jump("eg_a")},
				{Verdict: jump("eg_b")},
				{Counter: true, Verdict: verdict(model.Drop), Comment: "drop egress g1"},
			}},
			{Name: "eg_a", Rules: []model.Rule{
				{Lookups: []model.Lookup{lookup("peers4", model.DstAddr), lookup("ports_0", model.L4Proto, model.DstPort)}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/api-out"},
				{Lookups: []model.Lookup{lookup("peers6", model.DstAddr)}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/api-out"},
				{Family: model.IPv4, Lookups: []model.Lookup{{Fields: fieldsDstPP, Set: "named4"}}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/named"},
			}},
			{Name: "eg_b", Rules: []model.Rule{
				{Lookups: []model.Lookup{{Fields: fieldsDstPP, Set: "named6"}}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
				{Lookups: []model.Lookup{{Fields: []model.Field{model.DstAddr}, Set: "peers4", Negate: true}}, Verdict: verdict(model.Return)},
				{Lookups: []model.Lookup{lookup("protos", model.L4Proto), lookup("svc", model.DstPort)}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
				// Inline matches, one of each encoding nft uses: a prefix on
				// a byte boundary (shorter load), another prefix (mask), a
				// range (>=, <=), one address, IPv6, protocol, port and
				// port range, and an inline match before a lookup.
				{Matches: []model.Match{{Field: model.DstAddr, Addr: prefix("10.20.0.0/16")}, {Field: model.L4Proto, Proto: model.ProtoTCP},
					{Field: model.DstPort, Port: ports(443, 443)}}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
				{Matches: []model.Match{{Field: model.SrcAddr, Addr: prefix("10.21.16.0/20")}, {Field: model.DstAddr, Addr: model.AddrRange{From: addr("10.22.0.5"), To: addr("10.22.0.9")}}},
					Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
				{Family: model.IPv4, Matches: []model.Match{{Field: model.DstAddr, Addr: one("10.23.0.1")}, {Field: model.L4Proto, Proto: model.ProtoSCTP},
					{Field: model.DstPort, Port: ports(3000, 3010)}}, Lookups: []model.Lookup{lookup("peers4", model.SrcAddr)}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
				{Matches: []model.Match{{Field: model.DstAddr, Addr: prefix("2001:db8:1::/48")}, {Field: model.SrcAddr, Addr: prefix("2001:db8::/47")},
					{Field: model.L4Proto, Proto: model.ProtoUDP}}, Counter: true, Verdict: verdict(model.Accept), Comment: "shop/b"},
			}},
		},
	}
}

// openFlag is the element userdata nft attaches to an interval that runs
// to the highest address (NFTNL_UDATA_SET_ELEM_FLAGS =
// NFTNL_SET_ELEM_F_INTERVAL_OPEN): a display hint for nft itself, opaque
// to the kernel, that google/nftables v0.3.0 has no way to send (its
// elements carry only a comment). The listings are compared in full.
var openFlag = regexp.MustCompile(`  userdata = \{ \\x01\\x04\\x01\\x00\\x00\\x00 \}`)

// equivalent applies rs with the Applier in one namespace and its
// RenderReplace text with nft -f in another, and compares what the kernel
// holds: the listing and the netlink expressions.
func equivalent(t *testing.T, rs model.Ruleset) {
	t.Helper()
	a, b := netnstest.New(t, "anvil-apply"), netnstest.New(t, "anvil-apply")
	ap := newApplier(t, a)
	if changed, err := ap.Apply(rs); err != nil || !changed {
		t.Fatalf("Apply: changed %v, err %v", changed, err)
	}
	b.Nft(t, model.RenderReplace(rs), "-f", "-")
	if got, want := a.List(t, rs.Table), b.List(t, rs.Table); got != want {
		t.Errorf("nft list table differs\n--- applier\n%s\n--- nft -f\n%s\n--- diff\n%s", got, want, lineDiff(got, want))
	}
	if got, want := sortElements(a.ListNetlink(t, rs.Table)), sortElements(openFlag.ReplaceAllString(b.ListNetlink(t, rs.Table), "")); got != want {
		t.Errorf("netlink expressions differ\n%s", lineDiff(got, want))
	}
}

// sortElements sorts each run of set element lines: a hash set dumps its
// elements in the order of its per-set random hash seed.
func sortElements(s string) string {
	lines := strings.Split(s, "\n")
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && strings.HasPrefix(lines[j], "\telement ") {
			j++
		}
		if j > i {
			sort.Strings(lines[i:j])
			i = j
		} else {
			i++
		}
	}
	return strings.Join(lines, "\n")
}

// lineDiff is diff -u of the two texts.
func lineDiff(a, b string) string {
	dir, err := os.MkdirTemp("", "anvil-apply-diff")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	pa, pb := filepath.Join(dir, "applier"), filepath.Join(dir, "nft")
	if err := os.WriteFile(pa, []byte(a), 0o600); err != nil {
		return err.Error()
	}
	if err := os.WriteFile(pb, []byte(b), 0o600); err != nil {
		return err.Error()
	}
	out, _ := netnstest.RunErr("", "diff", "-u", pa, pb)
	return out
}

func TestEquivalentToNft(t *testing.T) {
	netnstest.RequireRoot(t)
	t.Run("realistic", func(t *testing.T) { equivalent(t, realistic("anvil_eq")) })
	// The compiler's own golden cases, compiled for real.
	cases, _ := filepath.Glob("../compile/testdata/*.yaml")
	if len(cases) == 0 {
		t.Fatal("no compiler test cases found")
	}
	for _, path := range cases {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, cfg := loadCase(t, path)
			rs, _ := compile.Compile(s, cfg)
			equivalent(t, rs)
		})
	}
}

// loadCase reads one of the compiler's multi-document YAML cases (the
// format of firewall/compile/testdata: a first line "# config: {json}"
// overrides config.Defaults()).
func loadCase(t *testing.T, path string) (cluster.Snapshot, config.Config) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, cfg, err := policygen.Parse(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cfg == nil {
		c := config.Defaults()
		cfg = &c
	}
	return s, *cfg
}

func TestAtomicity(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	good := realistic("anvil")
	if _, err := ap.Apply(good); err != nil {
		t.Fatal(err)
	}
	before := ns.List(t, ap.Table())
	beforeNL := ns.ListNetlink(t, ap.Table())

	// Each is valid for the applier and only the kernel refuses it, late
	// in the batch: after the table was deleted and most of it re-added.
	missing := realistic("anvil")
	missing.Chains[len(missing.Chains)-1].Rules = append(missing.Chains[len(missing.Chains)-1].Rules, model.Rule{Verdict: jump("no_such_chain")})
	loop := realistic("anvil")
	for i := range loop.Chains {
		if loop.Chains[i].Name == "eg_b" {
			loop.Chains[i].Rules = append(loop.Chains[i].Rules, model.Rule{Verdict: jump("egress_g1")}) // egress_g1 → eg_b → egress_g1
		}
	}
	appended := fmt.Sprintf("chain eg_b rules[%d]", len(good.Chains[len(good.Chains)-1].Rules))
	overlap := realistic("anvil")
	for i := range overlap.Sets {
		if overlap.Sets[i].Name == "peers4" {
			overlap.Sets[i].Elements = append(overlap.Sets[i].Elements, model.Element{Addr: prefix("10.1.0.0/16")})
		}
	}
	for _, bad := range []struct {
		name  string
		rs    model.Ruleset
		errno syscall.Errno
		what  string // the object the error must name
	}{
		{"jump to a missing chain", missing, syscall.ENOENT, appended},
		{"jump loop", loop, syscall.EMLINK, appended},
		{"overlapping interval", overlap, syscall.EEXIST, "elements of set peers4"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			sent := ap.Stats().Replacements
			changed, err := ap.Apply(bad.rs)
			if err == nil || changed {
				t.Fatalf("Apply: changed %v, err %v; want a kernel error", changed, err)
			}
			if !errors.Is(err, ErrRejected) || errors.Is(err, ErrInvalid) {
				t.Fatalf("want a kernel rejection, got %v", err)
			}
			if !errors.Is(err, bad.errno) || !strings.Contains(err.Error(), bad.what) {
				t.Errorf("error %q: want %v naming %q", err, bad.errno, bad.what)
			}
			t.Logf("kernel error: %v", err)
			if ap.Stats().Replacements != sent+1 {
				t.Errorf("replacements %d → %d: want one sent", sent, ap.Stats().Replacements)
			}
			if after := ns.List(t, ap.Table()); after != before {
				t.Errorf("the table changed although the batch failed\n%s", lineDiff(before, after))
			}
			if tables := strings.TrimSpace(ns.Nft(t, "", "list", "tables")); tables != "table inet "+ap.Table() {
				t.Errorf("tables after the rejection:\n%s\nwant only the live table inet %s", tables, ap.Table())
			}
			if after := ns.ListNetlink(t, ap.Table()); after != beforeNL {
				t.Errorf("the rules changed although the batch failed\n%s", lineDiff(beforeNL, after))
			}
			// The last good ruleset is still the reference: applying it
			// again is a no-op.
			if changed, err := ap.Apply(good); err != nil || changed {
				t.Errorf("re-Apply of the last good ruleset: changed %v, err %v; want false, nil", changed, err)
			}
		})
	}

	// And a new good ruleset still goes in.
	next := realistic("anvil")
	next.Chains[0].Rules = next.Chains[0].Rules[1:]
	if changed, err := ap.Apply(next); err != nil || !changed {
		t.Fatalf("Apply after failures: changed %v, err %v", changed, err)
	}
	if got := ns.List(t, ap.Table()); strings.Contains(got, "ct state established,related accept") {
		t.Errorf("the new ruleset was not applied:\n%s", got)
	}
}

func TestInvalidSendsNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	for _, bad := range []model.Rule{
		{Lookups: []model.Lookup{lookup("no_such_set", model.DstAddr)}, Verdict: verdict(model.Drop)},
		// a port without a protocol that has ports
		{Matches: []model.Match{{Field: model.DstPort, Port: ports(80, 80)}}, Verdict: verdict(model.Drop)},
		{Matches: []model.Match{{Field: model.L4Proto, Proto: 1}, {Field: model.DstPort, Port: ports(80, 80)}}, Verdict: verdict(model.Drop)},
		// an IPv6 address in a rule for IPv4 packets
		{Family: model.IPv4, Matches: []model.Match{{Field: model.DstAddr, Addr: one("2001:db8::1")}}, Verdict: verdict(model.Drop)},
		{Matches: []model.Match{{Field: model.DstAddr, Addr: one("10.0.0.1")}, {Field: model.SrcAddr, Addr: one("2001:db8::1")}}, Verdict: verdict(model.Drop)},
	} {
		rs := realistic("anvil")
		rs.Chains[0].Rules = append(rs.Chains[0].Rules, bad)
		if _, err := ap.Apply(rs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", model.RenderRule(rs, bad), err)
		}
	}
	if s := ap.Stats(); s.Replacements != 0 {
		t.Errorf("%d replacements sent for an untranslatable ruleset", s.Replacements)
	}
}

func TestChangeDetection(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	rs := realistic("anvil")
	mustApply := func(rs model.Ruleset, wantChanged bool) {
		t.Helper()
		before := ap.Stats().Replacements
		changed, err := ap.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged {
			t.Fatalf("changed = %v, want %v", changed, wantChanged)
		}
		sent := ap.Stats().Replacements - before
		if wantChanged && sent != 1 || !wantChanged && sent != 0 {
			t.Fatalf("%d replacements sent, want %d", sent, map[bool]int{true: 1}[wantChanged])
		}
	}
	mustApply(rs, true)
	mustApply(realistic("anvil"), false) // an equal copy
	if s := ap.Stats(); s.Unchanged != 1 {
		t.Errorf("Unchanged = %d, want 1", s.Unchanged)
	}

	// Only the order of two rules differs: a change.
	swapped := realistic("anvil")
	r := swapped.Chains[0].Rules
	r[0], r[1] = r[1], r[0]
	mustApply(swapped, true)
	if got := ns.List(t, ap.Table()); strings.Index(got, "ct state invalid drop") > strings.Index(got, "ct state established,related accept") {
		t.Errorf("rule order not applied:\n%s", got)
	}
	mustApply(swapped, false)
	mustApply(rs, true) // and back

	// Counter ownership does not reach the kernel: not a change.
	owned := realistic("anvil")
	owned.Owners = map[string]model.Owner{"shop/api-out": {Accept: true, Policies: []model.PolicyRef{{Namespace: "shop", Name: "api-out"}}}}
	mustApply(owned, false)

	// The table deleted behind the applier's back is put back.
	ns.Nft(t, "", "delete", "table", "inet", ap.Table())
	mustApply(rs, true)
	if s := ap.Stats(); s.Repaired != 1 {
		t.Errorf("Repaired = %d, want 1", s.Repaired)
	}
	if !strings.Contains(ns.List(t, ap.Table()), "chain eg_b") {
		t.Error("table not re-applied")
	}
	// A chain added behind its back (the table's use count changes).
	ns.Nft(t, "", "add", "chain", "inet", ap.Table(), "intruder")
	mustApply(rs, true)
	if strings.Contains(ns.List(t, ap.Table()), "intruder") {
		t.Error("foreign chain survived the re-apply")
	}
	mustApply(rs, false)
}

func TestRenameTable(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	if _, err := ap.Apply(realistic("first")); err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Apply(realistic("second")); err != nil {
		t.Fatal(err)
	}
	out := ns.Nft(t, "", "list", "tables")
	if strings.Contains(out, "first") || !strings.Contains(out, "table inet second") {
		t.Errorf("after renaming, tables are:\n%s", out)
	}
}

// TestSwap follows the table through applies: created live when there is
// none (one transaction), then alternating between its two names (a
// dormant table, then the swap), with exactly one table left, awake and
// equal to what a first apply makes; leftovers of a failed swap and a
// table put to sleep behind the applier's back are dealt with.
func TestSwap(t *testing.T) {
	netnstest.RequireRoot(t)
	ns, fresh := netnstest.New(t, "anvil-apply"), netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	tables := func() string {
		t.Helper()
		return strings.TrimSpace(ns.Nft(t, "", "list", "tables"))
	}
	// listing is the live table under the ruleset's name, as a first
	// apply in another namespace would leave it.
	listing := func(name string) string {
		t.Helper()
		return strings.Replace(ns.List(t, name), "table inet "+name+" {", "table inet anvil {", 1)
	}
	rs := realistic("anvil")
	next := realistic("anvil")
	next.Chains[0].Rules = next.Chains[0].Rules[1:]
	fa := newApplier(t, fresh)
	if _, err := fa.Apply(next); err != nil {
		t.Fatal(err)
	}
	wantNext := fresh.List(t, "anvil")

	step := func(rs model.Ruleset, wantTable string, wantTransactions uint64) {
		t.Helper()
		before := ap.Stats().Transactions
		if changed, err := ap.Apply(rs); err != nil || !changed {
			t.Fatalf("Apply: changed %v, err %v", changed, err)
		}
		if got := ap.Stats().Transactions - before; got != wantTransactions {
			t.Errorf("%d transactions, want %d", got, wantTransactions)
		}
		if ap.Table() != wantTable || tables() != "table inet "+wantTable {
			t.Fatalf("Table() = %q, the kernel's tables:\n%s\nwant only table inet %s", ap.Table(), tables(), wantTable)
		}
		if l := ns.List(t, wantTable); strings.Contains(l, "dormant") {
			t.Errorf("the live table is dormant:\n%s", l)
		}
	}
	step(rs, "anvil", 1)
	step(next, "anvil_b", 2)
	if got := listing("anvil_b"); got != wantNext {
		t.Errorf("the swapped-in table differs from a first apply's\n%s", lineDiff(got, wantNext))
	}
	step(rs, "anvil", 2)
	step(next, "anvil_b", 2)

	// A dormant leftover under the other name (a swap that failed after
	// its first transaction) is replaced by the next swap.
	ns.Nft(t, "table inet anvil {\n\tflags dormant\n\tchain leftover {\n\t}\n}\n", "-f", "-")
	step(rs, "anvil", 2)
	if strings.Contains(ns.List(t, "anvil"), "leftover") {
		t.Error("the leftover's chain survived")
	}
	// The live table put to sleep behind the applier's back: a drift,
	// repaired by a new table.
	ns.Nft(t, "", "add", "table", "inet", "anvil", "{", "flags", "dormant", ";", "}")
	repaired := ap.Stats().Repaired
	step(rs, "anvil", 1) // nothing live to swap from: one transaction
	if ap.Stats().Repaired != repaired+1 {
		t.Errorf("a dormant table was not seen as drift")
	}
	// The clean-up of a failed swap removes a dormant table, and only
	// that.
	ns.Nft(t, "table inet anvil_b {\n\tflags dormant\n}\n", "-f", "-")
	ap.removeDormant("anvil_b")
	if tables() != "table inet anvil" {
		t.Errorf("after removeDormant: %s", tables())
	}
}

// TestCounters sends loopback traffic through a chain hooked at output,
// inside the test's namespace, and reads the counters back by comment.
func TestCounters(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	if _, err := ap.Counters(); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Counters before Apply: %v, want ErrNotApplied", err)
	}
	rs := model.Ruleset{
		Table: "anvil",
		Sets: []model.Set{
			{Name: "dst4", Family: model.IPv4, Key: keyAddr, Interval: true, Elements: []model.Element{{Addr: prefix("127.0.0.0/8")}}},
			{Name: "dst6", Family: model.IPv6, Key: keyAddr, Interval: true, Elements: []model.Element{{Addr: one("::1")}}},
			{Name: "pp", Key: keyProtoPort, Interval: true, Elements: []model.Element{{Proto: model.ProtoUDP, Port: ports(9000, 9010)}}},
		},
		Chains: []model.Chain{{Name: "out", Hook: &model.Hook{Type: "filter", Hook: "output", Priority: 0, Policy: model.Accept}, Rules: []model.Rule{
			{Lookups: []model.Lookup{lookup("dst4", model.DstAddr), lookup("pp", model.L4Proto, model.DstPort)}, Counter: true, Comment: "ns/udp"},
			{Lookups: []model.Lookup{lookup("dst6", model.DstAddr), lookup("pp", model.L4Proto, model.DstPort)}, Counter: true, Comment: "ns/udp"},
			{Lookups: []model.Lookup{lookup("pp", model.L4Proto, model.DstPort)}, Counter: true, Comment: "ns/any"},
			{Counter: true, Comment: "ns/all"},
			{Counter: true}, // no comment: not reported
		}}},
	}
	if _, err := ap.Apply(rs); err != nil {
		t.Fatal(err)
	}
	// Receivers, so that no ICMP errors are sent back.
	var conns []net.PacketConn
	ns.Do(t, func() {
		for _, l := range [][2]string{{"udp4", "127.0.0.1:9005"}, {"udp6", "[::1]:9010"}, {"udp4", "127.0.0.1:9100"}} {
			c, err := net.ListenPacket(l[0], l[1])
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	})
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	send := func(network, to string, n, size int) {
		ns.Do(t, func() {
			c, err := net.Dial(network, to)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for range n {
				if _, err := c.Write(make([]byte, size)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	send("udp4", "127.0.0.1:9005", 5, 100) // IP 20 + UDP 8 + 100 = 128 bytes each
	send("udp6", "[::1]:9010", 3, 100)     // IP6 40 + 8 + 100 = 148
	send("udp4", "127.0.0.1:9100", 2, 100) // port outside the set

	got, err := ap.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Counter{
		"ns/udp": {Packets: 8, Bytes: 5*128 + 3*148},
		"ns/any": {Packets: 8, Bytes: 5*128 + 3*148},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("counter %q = %+v, want %+v", k, got[k], w)
		}
	}
	if all, w := got["ns/all"], (Counter{Packets: 10, Bytes: 7*128 + 3*148}); all != w {
		t.Errorf("counter ns/all = %+v, want %+v", all, w)
	}
	if _, ok := got[""]; ok || len(got) != 3 {
		t.Errorf("counters %v: want exactly ns/udp, ns/any, ns/all", got)
	}
	pc, err := ap.PacketCounts()
	if err != nil || pc["ns/udp"] != 8 {
		t.Errorf("PacketCounts: %v, %v", pc, err)
	}
}

// TestLargeSets applies sets with 60,000 elements in all: each set's
// elements are split into NEWSETELEM messages under the 64 KiB attribute
// limit, all in the one batch, and the kernel holds every element.
func TestLargeSets(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-apply")
	ap := newApplier(t, ns)
	rs := largeRuleset(40000, 15000, 5000)
	start := time.Now()
	changed, err := ap.Apply(rs)
	took := time.Since(start)
	if err != nil || !changed {
		t.Fatalf("Apply: %v, %v", changed, err)
	}
	st := ap.Stats()
	if st.Replacements != 1 {
		t.Errorf("%d replacements, want 1", st.Replacements)
	}
	t.Logf("60,000 elements in one batch of %d messages, ~%d KiB, applied in %v", st.LastMessages, st.LastBytes>>10, took)
	c, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}
	for _, s := range rs.Sets {
		set, err := c.GetSetByName(table, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			t.Fatal(err)
		}
		want, err := elements(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(elems) != len(want) {
			t.Errorf("set %s: kernel holds %d elements, want %d", s.Name, len(elems), len(want))
		}
	}
	// Same again: nothing sent.
	if changed, err := ap.Apply(largeRuleset(40000, 15000, 5000)); err != nil || changed {
		t.Errorf("second Apply: %v, %v", changed, err)
	}
}

// largeRuleset has an IPv4 interval set of n4 disjoint /31s, an IPv6 one
// of n6 /64s and a named-port style concatenation of nc elements.
func largeRuleset(n4, n6, nc int) model.Ruleset {
	v4 := model.Set{Name: "big4", Family: model.IPv4, Key: keyAddr, Interval: true}
	for i := range n4 {
		base := netip.AddrFrom4([4]byte{10, byte(i >> 14), byte(i >> 6), byte(i << 2)})
		v4.Elements = append(v4.Elements, model.Element{Addr: prefix(netip.PrefixFrom(base, 31).String())})
	}
	v6 := model.Set{Name: "big6", Family: model.IPv6, Key: keyAddr, Interval: true}
	for i := range n6 {
		b := [16]byte{0xfd, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}
		v6.Elements = append(v6.Elements, model.Element{Addr: prefix(netip.PrefixFrom(netip.AddrFrom16(b), 64).String())})
	}
	cc := model.Set{Name: "bigc", Family: model.IPv4, Key: keyAddrPP, Interval: true}
	for i := range nc {
		a := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
		cc.Elements = append(cc.Elements, model.Element{Addr: one(a.String()), Proto: model.ProtoTCP, Port: ports(8080, 8090)})
	}
	return model.Ruleset{
		Table: "anvil",
		Sets:  []model.Set{v4, v6, cc},
		Chains: []model.Chain{{Name: "forward", Hook: &model.Hook{Type: "filter", Hook: "forward", Policy: model.Accept}, Rules: []model.Rule{
			{Lookups: []model.Lookup{lookup("big4", model.DstAddr)}, Counter: true, Verdict: verdict(model.Accept), Comment: "big4"},
			{Lookups: []model.Lookup{lookup("big6", model.DstAddr)}, Counter: true, Verdict: verdict(model.Accept), Comment: "big6"},
			{Lookups: []model.Lookup{{Fields: fieldsDstPP, Set: "bigc"}}, Counter: true, Verdict: verdict(model.Accept), Comment: "bigc"},
		}}},
	}
}

// TestCarryCounters re-applies a changed ruleset: with WithCarryCounters
// the counters continue from the old table's sums; without, they restart.
func TestCarryCounters(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, carry := range []bool{true, false} {
		ns := netnstest.New(t, "anvil-apply")
		opts := []Option{WithNetNS(ns.FD)}
		if carry {
			opts = append(opts, WithCarryCounters())
		}
		ap, err := New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		rs := func(extra bool) model.Ruleset {
			rules := []model.Rule{
				{Lookups: []model.Lookup{lookup("pp", model.L4Proto, model.DstPort)}, Counter: true, Comment: "ns/udp"},
				{Lookups: []model.Lookup{lookup("pp", model.L4Proto, model.DstPort)}, Counter: true, Comment: "ns/udp"},
			}
			if extra {
				rules = append([]model.Rule{{Counter: true, Comment: "ns/new"}}, rules...)
			}
			return model.Ruleset{Table: "anvil",
				Sets:   []model.Set{{Name: "pp", Key: keyProtoPort, Interval: true, Elements: []model.Element{{Proto: model.ProtoUDP, Port: ports(9005, 9005)}}}},
				Chains: []model.Chain{{Name: "out", Hook: &model.Hook{Type: "filter", Hook: "output", Policy: model.Accept}, Rules: rules}},
			}
		}
		if _, err := ap.Apply(rs(false)); err != nil {
			t.Fatal(err)
		}
		var rx net.PacketConn
		send := func(n int) {
			ns.Do(t, func() {
				if rx == nil {
					if rx, err = net.ListenPacket("udp4", "127.0.0.1:9005"); err != nil {
						t.Fatal(err)
					}
				}
				c, err := net.Dial("udp4", "127.0.0.1:9005")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for range n {
					if _, err := c.Write([]byte("x")); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
		send(5) // two rules count each packet: 10
		if changed, err := ap.Apply(rs(true)); err != nil || !changed {
			t.Fatalf("re-Apply: %v, %v", changed, err)
		}
		send(2) // 10 carried (or not) + 4
		got, err := ap.Counters()
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(4)
		if carry {
			want = 14
		}
		if got["ns/udp"].Packets != want || got["ns/new"].Packets != 2 {
			t.Errorf("carry %v: counters %v, want ns/udp %d packets, ns/new 2", carry, got, want)
		}
		rx.Close()
		ap.Close()
	}
}
