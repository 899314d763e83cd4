package apply

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

// object encodes a NEWOBJ payload as the kernel dumps it.
func object(t *testing.T, name string, typ uint32, data []byte) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(1, "anvil") // NFTA_OBJ_TABLE, ignored
	ae.String(nftaObjName, name)
	ae.Uint32(nftaObjType, typ)
	if data != nil {
		ae.Bytes(nftaObjData, data)
	}
	ae.Uint32(5, 3) // NFTA_OBJ_USE, ignored
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

func TestObjCounter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		want  Counter
		named string
		ok    bool
	}{
		{"counter", object(t, "ns/pol", nftObjectCounter, counterData(t, 1500, 3)), Counter{Packets: 3, Bytes: 1500}, "ns/pol", true},
		{"zero", object(t, "default_egress", nftObjectCounter, counterData(t, 0, 0)), Counter{}, "default_egress", true},
		{"a quota object", object(t, "q", 2, counterData(t, 9, 9)), Counter{}, "q", false},
	} {
		name, c, ok, err := objCounter(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ok != tc.ok || name != tc.named || (ok && c != tc.want) {
			t.Errorf("%s: %q %+v %v; want %q %+v %v", tc.name, name, c, ok, tc.named, tc.want, tc.ok)
		}
	}
	if _, _, _, err := objCounter([]byte{0xff, 0xff, 0, 0, 1}); err == nil {
		t.Error("garbage decoded without error")
	}
	if _, _, _, err := objCounter(object(t, "x", nftObjectCounter, []byte{0xff, 0xff, 0, 0, 1})); err == nil {
		t.Error("garbage counter data decoded without error")
	}
}
