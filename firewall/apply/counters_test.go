package apply

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

// rule encodes a NEWRULE payload as the kernel dumps it: expressions
// (each name + data) and userdata.
func rule(t *testing.T, userdata []byte, exprs ...[2][]byte) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(1, "anvil") // NFTA_RULE_TABLE, ignored
	ae.Nested(nftaRuleExpressions, func(list *netlink.AttributeEncoder) error {
		for _, x := range exprs {
			list.Nested(nftaListElem, func(e *netlink.AttributeEncoder) error {
				e.String(nftaExprName, string(x[0]))
				e.Bytes(nftaExprData, x[1])
				return nil
			})
		}
		return nil
	})
	if userdata != nil {
		ae.Bytes(nftaRuleUserdata, userdata)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counterData(t *testing.T, bytes, packets uint64) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint64(nftaCounterBytes, bytes)
	ae.Uint64(nftaCounterPackets, packets)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRuleCounter(t *testing.T) {
	ud := []byte("\x00\x07ns/pol\x00")
	lookup := [2][]byte{[]byte("lookup"), {0, 0, 0, 0}}
	for _, tc := range []struct {
		name  string
		in    []byte
		want  Counter
		named string
		ok    bool
	}{
		{"counted", rule(t, ud, lookup, [2][]byte{[]byte("counter"), counterData(t, 1500, 3)}), Counter{Packets: 3, Bytes: 1500}, "ns/pol", true},
		{"two counters", rule(t, ud, [2][]byte{[]byte("counter"), counterData(t, 1, 1)}, [2][]byte{[]byte("counter"), counterData(t, 2, 2)}), Counter{Packets: 3, Bytes: 3}, "ns/pol", true},
		{"no counter", rule(t, ud, lookup), Counter{}, "ns/pol", false},
		{"no comment", rule(t, nil, [2][]byte{[]byte("counter"), counterData(t, 9, 9)}), Counter{Packets: 9, Bytes: 9}, "", false},
	} {
		name, c, ok, err := ruleCounter(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ok != tc.ok || (ok && (c != tc.want || name != tc.named)) {
			t.Errorf("%s: %q %+v %v; want %q %+v %v", tc.name, name, c, ok, tc.named, tc.want, tc.ok)
		}
	}
	if _, _, _, err := ruleCounter([]byte{0xff, 0xff, 0, 0, 1}); err == nil {
		t.Error("garbage decoded without error")
	}
}
