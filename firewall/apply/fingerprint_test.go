package apply

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
)

// full is a ruleset whose first set, element, chain, rule and lookup have
// every field set (it need not be valid: only the fingerprint sees it).
func full() model.Ruleset {
	lk := model.Lookup{Fields: []model.Field{model.DstAddr, model.L4Proto}, Set: "s", Negate: true}
	v := model.Verdict{Kind: model.VMap, Chain: "c", Map: &lk, Addr: netip.MustParseAddr("192.0.2.1")}
	return model.Ruleset{
		Table: "t",
		Sets: []model.Set{{Name: "s", Family: model.IPv4, Key: []model.KeyKind{model.KeyAddr, model.KeyProto}, Interval: true, Verdicts: true,
			Elements: []model.Element{{Addr: model.AddrRange{From: netip.MustParseAddr("10.0.0.1"), To: netip.MustParseAddr("10.0.0.9")},
				Proto: 6, Port: model.PortRange{From: 1, To: 2}, Verdict: v}}}},
		Chains: []model.Chain{{Name: "c", Hook: &model.Hook{Type: "filter", Hook: "forward", Priority: 1, Policy: model.Drop},
			Rules: []model.Rule{{Family: model.IPv4, Iif: model.IfMatch{Name: "a", Negate: true}, Oif: model.IfMatch{Name: "b", Negate: true},
				CtState: model.CtNew, Matches: []model.Match{{Field: model.DstAddr, Addr: model.AddrRange{From: netip.MustParseAddr("10.0.0.1"), To: netip.MustParseAddr("10.0.0.9")},
					Proto: 6, Port: model.PortRange{From: 1, To: 2}}},
				Lookups: []model.Lookup{lk}, Counter: true, Log: &model.Log{Prefix: "p", Rate: 1, Burst: 2},
				Verdict: v, Comment: "x"}}}},
		Owners: map[string]model.Owner{"x": {Accept: true}},
	}
}

func clone(t *testing.T, rs model.Ruleset) model.Ruleset {
	t.Helper()
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var out model.Ruleset
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

var addrType = reflect.TypeOf(netip.Addr{})

// leaves calls fn for every scalar reachable from v (struct fields, the
// first element of each slice, pointees), maps excepted, in a fixed order;
// fn returns false to stop.
func leaves(path string, v reflect.Value, fn func(path string, leaf reflect.Value) bool) bool {
	switch {
	case v.Type() == addrType:
		return fn(path, v)
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if !leaves(path+"."+v.Type().Field(i).Name, v.Field(i), fn) {
				return false
			}
		}
		return true
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			return true
		}
		return leaves(path+"[0]", v.Index(0), fn)
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return true
		}
		return leaves(path, v.Elem(), fn)
	case v.Kind() == reflect.Map:
		return true
	}
	return fn(path, v)
}

func mutate(leaf reflect.Value) {
	switch {
	case leaf.Type() == addrType:
		leaf.Set(reflect.ValueOf(leaf.Interface().(netip.Addr).Next()))
	case leaf.Kind() == reflect.Bool:
		leaf.SetBool(!leaf.Bool())
	case leaf.CanInt():
		leaf.SetInt(leaf.Int() + 1)
	case leaf.CanUint():
		leaf.SetUint(leaf.Uint() + 1)
	case leaf.Kind() == reflect.String:
		leaf.SetString(leaf.String() + "x")
	default:
		panic("unhandled leaf kind " + leaf.Kind().String())
	}
}

// TestFingerprintCoversModel changes each field of the model in turn:
// every change must change the fingerprint, so a field added to the model
// and forgotten here fails this test.
func TestFingerprintCoversModel(t *testing.T) {
	base := full()
	want := fingerprint(base)
	if fingerprint(clone(t, base)) != want {
		t.Fatal("fingerprint of an identical copy differs")
	}
	var n int
	leaves("rs", reflect.ValueOf(&base).Elem(), func(string, reflect.Value) bool { n++; return true })
	if n < 40 {
		t.Fatalf("only %d fields found", n)
	}
	for i := range n {
		rs := clone(t, base)
		k := 0
		var where string
		leaves("rs", reflect.ValueOf(&rs).Elem(), func(path string, leaf reflect.Value) bool {
			if k == i {
				mutate(leaf)
				where = path
				return false
			}
			k++
			return true
		})
		if fingerprint(rs) == want {
			t.Errorf("changing %s does not change the fingerprint", where)
		}
	}
}

func TestFingerprintOrderAndOwners(t *testing.T) {
	base := full()
	base.Chains[0].Rules = append(base.Chains[0].Rules, model.Rule{Verdict: model.Verdict{Kind: model.Accept}})
	want := fingerprint(base)
	swapped := clone(t, base)
	r := swapped.Chains[0].Rules
	r[0], r[1] = r[1], r[0]
	if fingerprint(swapped) == want {
		t.Error("reordering rules does not change the fingerprint")
	}
	owners := clone(t, base)
	owners.Owners = map[string]model.Owner{"other": {Policies: []model.PolicyRef{{Namespace: "a", Name: "b"}}}}
	if fingerprint(owners) != want {
		t.Error("counter owners change the fingerprint, but they never reach the kernel")
	}
	// Moving a byte between adjacent strings must not collide.
	a, b := clone(t, base), clone(t, base)
	a.Table, a.Sets[0].Name = "ab", "c"
	b.Table, b.Sets[0].Name = "a", "bc"
	if fingerprint(a) == fingerprint(b) {
		t.Error("the encoding is ambiguous")
	}
}
