package sqlstore

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// largeInventory is a large server's: 24 disks, 8 NICs, 120 PCI devices.
func largeInventory() *anvilv1.Inventory {
	inv := &anvilv1.Inventory{Product: &anvilv1.Product{Name: "R650", Uuid: "u1"}}
	for i := range 24 {
		inv.Disks = append(inv.Disks, &anvilv1.Disk{Name: fmt.Sprintf("nvme%dn1", i), Path: fmt.Sprintf("/dev/nvme%dn1", i),
			Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: fmt.Sprintf("S64HNE0T%06d", i), SizeBytes: 3840755982336})
	}
	for i := range 8 {
		inv.Nics = append(inv.Nics, &anvilv1.NIC{Name: fmt.Sprintf("ens%df0", i), Mac: fmt.Sprintf("b8:ce:f6:00:00:%02x", i), Driver: "mlx5_core"})
	}
	for i := range 120 {
		inv.PciDevices = append(inv.PciDevices, &anvilv1.PCIDevice{Address: fmt.Sprintf("0000:%02x:00.0", i), VendorId: "8086", ProductId: "0998", ClassId: "0600"})
	}
	return inv
}

// A large inventory is stored compressed and read back exactly; values
// written before compression (raw proto bytes) still read; a damaged or
// oversized compressed value is an error, not a machine with a wrong
// inventory.
func TestInventoryCodec(t *testing.T) {
	c, err := newInvCodec()
	if err != nil {
		t.Fatal(err)
	}
	inv := largeInventory()
	raw, err := proto.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := c.encode(inv, c.buffer())
	if err != nil {
		t.Fatal(err)
	}
	if stored[0] != zstdMark || len(stored)*3 > len(raw) {
		t.Errorf("stored %d bytes (first %#x) for %d bytes of proto, want the mark and under a third", len(stored), stored[0], len(raw))
	}
	for name, b := range map[string][]byte{"compressed": stored, "raw (before compression)": raw} {
		got, err := c.decode(b, true)
		if err != nil || !proto.Equal(got, inv) {
			t.Errorf("%s: decode = %v, equal %v", name, err, proto.Equal(got, inv))
		}
	}
	if none, err := c.encode(nil, c.buffer()); none != nil || err != nil {
		t.Errorf("nil inventory stored as %v, %v; want NULL", none, err)
	}
	if got, err := c.decode(nil, false); got != nil || err != nil {
		t.Errorf("NULL: %v, %v; want nil, nil", got, err)
	}
	empty, err := c.encode(&anvilv1.Inventory{}, c.buffer())
	if err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("empty inventory stored as %v, %v; want empty, not NULL", empty, err)
	}
	if got, err := c.decode(empty, true); err != nil || got == nil || !proto.Equal(got, &anvilv1.Inventory{}) {
		t.Errorf("empty inventory read as %v, %v", got, err)
	}
	damaged := bytes.Clone(stored)
	damaged[len(damaged)/2] ^= 0xff
	if _, err := c.decode(damaged, true); err == nil {
		t.Error("a damaged compressed inventory decoded without an error")
	}
	for _, n := range []int{len(stored) / 2, 5, 4, 2, 1} {
		if got, err := c.decode(stored[:n], true); err == nil {
			t.Errorf("a compressed inventory cut to %d bytes decoded without an error: %v", n, got)
		}
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll([]byte(strings.Repeat("\x0a", maxInventory+1)), []byte{zstdMark})
	enc.Close()
	if _, err := c.decode(bomb, true); err == nil {
		t.Errorf("a %d-byte value that decompresses past %d bytes was accepted", len(bomb), maxInventory)
	}
}

// Encoding reuses its buffers: a registration's 20 KB inventory leaves no
// garbage of that size, and a reused buffer never carries bytes of the
// inventory encoded in it before.
func TestInventoryEncodeReusesBuffers(t *testing.T) {
	c, err := newInvCodec()
	if err != nil {
		t.Fatal(err)
	}
	big, small := &anvilv1.Inventory{}, &anvilv1.Inventory{Product: &anvilv1.Product{Name: "small"}}
	for i := range 200 {
		big.PciDevices = append(big.PciDevices, &anvilv1.PCIDevice{Address: fmt.Sprintf("0000:%02x:00.0", i), VendorId: fmt.Sprint(i)})
	}
	buf := c.buffer()
	if _, err := c.encode(big, buf); err != nil {
		t.Fatal(err)
	}
	c.recycle(buf)
	buf = c.buffer()
	v, err := c.encode(small, buf)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.decode(v, true); err != nil || !proto.Equal(got, small) {
		t.Fatalf("after reuse: decode = %v, %v; want %v", got, err, small)
	}
	c.recycle(buf)
	allocs := testing.AllocsPerRun(100, func() {
		b := c.buffer()
		if _, err := c.encode(big, b); err != nil {
			t.Fatal(err)
		}
		c.recycle(b)
	})
	// Without reuse it is 4 (two buffers, each grown once).
	limit := 0.0
	if raceEnabled {
		limit = 2 // the pool drops some buffers on purpose
	}
	if allocs > limit {
		t.Errorf("encoding a %d-device inventory allocates %.0f times per call, want at most %.0f (buffers reused)", len(big.PciDevices), allocs, limit)
	}
}

// BenchmarkInventoryEncode stores a large server's inventory (24 disks, 8
// NICs, 120 PCI devices), as every registration does.
func BenchmarkInventoryEncode(b *testing.B) {
	c, err := newInvCodec()
	if err != nil {
		b.Fatal(err)
	}
	inv := largeInventory()
	b.ReportAllocs()
	for b.Loop() {
		buf := c.buffer()
		if _, err := c.encode(inv, buf); err != nil {
			b.Fatal(err)
		}
		c.recycle(buf)
	}
}
