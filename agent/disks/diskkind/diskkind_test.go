package diskkind

import (
	"slices"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestFromName(t *testing.T) {
	for name, want := range map[string]string{
		"dm-0": Virtual, "md0": Virtual, "md127": Virtual, "loop3": Virtual, "ram0": Virtual,
		"zram0": Virtual, "nbd0": Virtual, "drbd1": Virtual, "rbd0": Virtual, "bcache0": Virtual,
		"sr0": Optical, "sr1": Optical,
		"sda": Disk, "nvme0n1": Disk, "vda": Disk, "xvda": Disk, "mmcblk0": Disk, "dasda": Disk, "": Disk,
	} {
		if got := FromName(name); got != want {
			t.Errorf("FromName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestOf(t *testing.T) {
	tests := []struct {
		d    *anvilv1.Disk
		want string
	}{
		// The field wins over the name.
		{&anvilv1.Disk{Name: "sda", Kind: Optical}, Optical},
		{&anvilv1.Disk{Name: "loop0", Kind: Disk}, Disk},
		// Older agents: the name decides.
		{&anvilv1.Disk{Name: "dm-0"}, Virtual},
		{&anvilv1.Disk{Name: "sr0"}, Optical},
		{&anvilv1.Disk{Name: "nvme0n1"}, Disk},
		// A kind from the future is not a disk.
		{&anvilv1.Disk{Name: "st0", Kind: "tape"}, "tape"},
		{nil, Disk},
	}
	for _, tt := range tests {
		if got := Of(tt.d); got != tt.want {
			t.Errorf("Of(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if IsDisk(nil) || IsDisk(&anvilv1.Disk{Name: "st0", Kind: "tape"}) || !IsDisk(&anvilv1.Disk{Name: "sda"}) {
		t.Error("IsDisk: want true only for disks")
	}
}

func TestPhysical(t *testing.T) {
	ds := []*anvilv1.Disk{
		{Name: "sdd", Path: "/dev/sdd", Wwn: "0x5000c500a1b2c3d4"}, // second path of sdb's LUN
		{Name: "dm-0", Path: "/dev/dm-0"},
		{Name: "sdb", Path: "/dev/sdb", Wwn: "0x5000C500A1B2C3D4"},
		{Name: "sdc", Path: "/dev/sdc"},
		{Name: "sda", Path: "/dev/sda"},
		nil,
		{Name: "sr0", Path: "/dev/sr0", Kind: Optical},
		{Name: "loop0", Path: "/dev/loop0", Kind: Virtual},
		{Name: "sde", Path: "/dev/sde", Kind: Disk, Removable: true},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Kind: Disk, Wwn: "eui.0025", Serial: "S1", SizeBytes: 1 << 40},
		// Two drives that report one bogus identifier: distinct serials,
		// both kept.
		{Name: "nvme1n1", Path: "/dev/nvme1n1", Kind: Disk, Wwn: "eui.0025", Serial: "S2", SizeBytes: 1 << 40},
	}
	var got []string
	for _, d := range Physical(ds) {
		got = append(got, d.GetName())
	}
	want := []string{"nvme0n1", "nvme1n1", "sda", "sdb", "sdc", "sde"}
	if !slices.Equal(got, want) {
		t.Errorf("Physical = %v, want %v", got, want)
	}
	if len(Physical(nil)) != 0 {
		t.Error("Physical(nil) is not empty")
	}
}
