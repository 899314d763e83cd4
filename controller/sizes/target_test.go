package sizes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// snapshotInventory reads the inventory that agent/inventory collects from
// one of ghw's real-machine snapshots (kept there as a golden file and
// checked against Collect by TestCollectGHWSnapshots and
// TestDiskKindsGHWSnapshots).
func snapshotInventory(t *testing.T, name string) *anvilv1.Inventory {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "agent", "inventory", "testdata", "ghw", name+".golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{}
	if err := protojson.Unmarshal(b, inv); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return inv
}

// legacy returns inv as an agent older than Disk.kind reports it.
func legacy(inv *anvilv1.Inventory) *anvilv1.Inventory {
	for _, d := range inv.GetDisks() {
		d.Kind = ""
	}
	return inv
}

// TestStorageOnSnapshot: the machine of ghw's snapshot 415ee03b has one
// NVMe disk of 2000409264 sectors (954 GiB) with an LVM volume dm-0 of
// 1997047808 sectors on it; counting both gave 1906 GiB.
func TestStorageOnSnapshot(t *testing.T) {
	const nvme = 2000409264 * 512
	for _, tt := range []struct {
		what string
		inv  *anvilv1.Inventory
	}{
		{"agent with kinds", snapshotInventory(t, "linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d")},
		{"agent without kinds", legacy(snapshotInventory(t, "linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d"))},
	} {
		got, ok := measure(c(storage, 1, 1, ""), tt.inv)
		if !ok || got != nvme {
			t.Errorf("%s: storage = %d bytes (%.0f GiB), want %d (954 GiB)", tt.what, got, float64(got)/GiB, uint64(nvme))
		}
		s := size("laptop-1t", c(storage, 900*GiB, 1000*GiB, ""))
		if !Matches(s, tt.inv) {
			t.Errorf("%s: does not match a 900-1000 GiB storage size", tt.what)
		}
	}
	// The multipath machine (s390x): its 16 paths have no WWN in the
	// snapshot, so each path counts; the dm-multipath maps do not.
	inv := snapshotInventory(t, "linux-s390x-snapshot")
	got, _ := measure(c(storage, 1, 1, ""), inv)
	if want := uint64(8*2147483648+8*209715200) * 512; got != want {
		t.Errorf("s390x: storage = %d, want %d (the 16 sd paths, not dm-0..2)", got, want)
	}
}

// TestStorageMultipath: two paths of one LUN share a WWN and count once.
func TestStorageMultipath(t *testing.T) {
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{
		{Name: "sda", Path: "/dev/sda", Kind: "disk", Wwn: "0x600a0b800011", SizeBytes: 100 * GiB},
		{Name: "sdb", Path: "/dev/sdb", Kind: "disk", Wwn: "0x600a0b800011", SizeBytes: 100 * GiB},
		{Name: "sdc", Path: "/dev/sdc", Kind: "disk", Wwn: "0x600a0b800022", SizeBytes: 50 * GiB},
		{Name: "sdd", Path: "/dev/sdd", Kind: "disk", Wwn: "0x600a0b800022", SizeBytes: 50 * GiB},
		{Name: "dm-0", Path: "/dev/dm-0", Kind: "virtual", SizeBytes: 100 * GiB},
		{Name: "dm-1", Path: "/dev/dm-1", Kind: "virtual", SizeBytes: 50 * GiB},
		{Name: "sr0", Path: "/dev/sr0", Kind: "optical", SizeBytes: 4 * GiB},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Kind: "disk", SizeBytes: 10 * GiB},
	}}
	if got, _ := measure(c(storage, 1, 1, ""), inv); got != 160*GiB {
		t.Errorf("storage = %d GiB, want 160", got/GiB)
	}
}

// TestTargetDiskOnSnapshots: the default install disk of every machine of
// ghw's snapshots, for agents with and without Disk.kind. Before, five of
// the seven got /dev/dm-0.
func TestTargetDiskOnSnapshots(t *testing.T) {
	for name, want := range map[string]string{
		"linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d": "/dev/nvme0n1",
		"linux-amd64-61797caf7c0b6bca1725ad7975ed4773": "/dev/sda",
		"linux-amd64-8581cf3a529e5d8b97ea876eade2f60d": "/dev/sda",
		"linux-amd64-accel-nvidia":                     "/dev/sda",
		"linux-amd64-accel":                            "/dev/vda",
		"linux-arm64-c288e0776090cd558ef793b2a4e61939": "/dev/nvme0n1",
		"linux-s390x-snapshot":                         "/dev/sda",
	} {
		for _, inv := range []*anvilv1.Inventory{snapshotInventory(t, name), legacy(snapshotInventory(t, name))} {
			got, err := TargetDisk(inv, "")
			if err != nil || got != want {
				t.Errorf("%s: TargetDisk = %q, %v; want %s", name, got, err, want)
			}
		}
	}
	// Naming a virtual or optical device is refused.
	inv := snapshotInventory(t, "linux-amd64-8581cf3a529e5d8b97ea876eade2f60d")
	for _, want := range []string{"/dev/dm-0", "/dev/sr0"} {
		_, err := TargetDisk(inv, want)
		if !errors.Is(err, ErrNotADisk) || !strings.Contains(err.Error(), want) {
			t.Errorf("TargetDisk(%s) = %v, want ErrNotADisk naming it", want, err)
		}
	}
}

func TestTargetDisk(t *testing.T) {
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{
		{Name: "dm-0", Path: "/dev/dm-0", Kind: "virtual"},
		{Name: "sr0", Path: "/dev/sr0", Kind: "optical", Serial: "BMC-VMEDIA", Removable: true},
		{Name: "sdc", Path: "/dev/sdc", Kind: "disk", Serial: "USB1", Removable: true},
		{Name: "sdb", Path: "/dev/sdb", Kind: "disk", Serial: "S2", Wwn: "0x5000c500a1b2c3d4"},
		{Name: "sda", Path: "/dev/sda", Kind: "disk", Serial: "S1", Wwn: "0x5000c500a1b2c3d4"},
		{Name: "loop0", Path: "/dev/loop0", Kind: "virtual", Serial: "L0"},
		{Name: "md0", Path: "/dev/md0"}, // older agent: virtual by name
		{Name: "st0", Path: "/dev/st0", Kind: "tape"},
	}}
	tests := []struct {
		inv     *anvilv1.Inventory
		want    string
		got     string
		wantErr error
	}{
		// Default: the first non-removable physical disk by path.
		{inv, "", "/dev/sda", nil},
		// Named disks are returned as given.
		{inv, "/dev/sdb", "/dev/sdb", nil},
		{inv, "S2", "S2", nil},
		{inv, "0x5000c500a1b2c3d4", "0x5000c500a1b2c3d4", nil},
		{inv, "USB1", "USB1", nil}, // removable, but named
		// Not disks.
		{inv, "/dev/dm-0", "", ErrNotADisk},
		{inv, "/dev/sr0", "", ErrNotADisk},
		{inv, "BMC-VMEDIA", "", ErrNotADisk},
		{inv, "L0", "", ErrNotADisk},
		{inv, "/dev/md0", "", ErrNotADisk},
		{inv, "/dev/st0", "", ErrNotADisk},
		// Unknown.
		{inv, "/dev/sdz", "", ErrNoSuchDisk},
		{inv, "sda", "", ErrNoSuchDisk}, // a name is not a path
		// Nothing to choose.
		{&anvilv1.Inventory{Disks: []*anvilv1.Disk{{Name: "dm-0", Path: "/dev/dm-0"}, {Name: "sr0", Path: "/dev/sr0"}, {Name: "sdc", Path: "/dev/sdc", Removable: true}}}, "", "", ErrNoTargetDisk},
		{&anvilv1.Inventory{}, "", "", ErrNoTargetDisk},
		{nil, "", "", ErrNoTargetDisk},
		{nil, "/dev/sda", "", ErrNoSuchDisk},
	}
	for _, tt := range tests {
		got, err := TargetDisk(tt.inv, tt.want)
		if got != tt.got || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("TargetDisk(%q) = %q, %v; want %q, %v", tt.want, got, err, tt.got, tt.wantErr)
			continue
		}
		if err != nil {
			t.Logf("TargetDisk(%q): %v", tt.want, err)
		}
	}
}
