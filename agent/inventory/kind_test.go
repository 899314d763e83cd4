package inventory

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/disks/diskkind"
)

// TestKindOf: every sysfs signal decides on its own, whatever the name.
func TestKindOf(t *testing.T) {
	const disk, virtual, optical = diskkind.Disk, diskkind.Virtual, diskkind.Optical
	tests := []struct {
		what string
		f    blockFacts
		want string
	}{
		{"SCSI disk", blockFacts{name: "sda", major: 8, majorName: "sd"}, disk},
		{"NVMe namespace (blkext major)", blockFacts{name: "nvme0n1", major: 259, majorName: "blkext"}, disk},
		{"virtio-blk on a dynamic major", blockFacts{name: "vda", major: 252, majorName: "virtblk"}, disk},
		{"nothing known", blockFacts{name: "xyz0", major: -1}, disk},

		{"dm directory", blockFacts{name: "xyz0", major: 252, dm: true}, virtual},
		{"md directory", blockFacts{name: "xyz0", major: 9, md: true}, virtual},
		{"loop directory", blockFacts{name: "xyz0", major: -1, loop: true}, virtual},
		{"below /sys/devices/virtual/block", blockFacts{name: "xyz0", major: -1, virtualBlock: true}, virtual},
		{"ram disk major", blockFacts{name: "xyz0", major: 1}, virtual},
		{"loop major", blockFacts{name: "xyz0", major: 7}, virtual},
		{"md major", blockFacts{name: "xyz0", major: 9}, virtual},
		{"nbd major", blockFacts{name: "xyz0", major: 43}, virtual},
		{"drbd major", blockFacts{name: "xyz0", major: 147}, virtual},
		{"device-mapper in /proc/devices", blockFacts{name: "xyz0", major: 253, majorName: "device-mapper"}, virtual},
		{"zram in /proc/devices", blockFacts{name: "xyz0", major: 251, majorName: "zram"}, virtual},
		{"mdp in /proc/devices", blockFacts{name: "xyz0", major: 254, majorName: "mdp"}, virtual},
		{"rbd in /proc/devices", blockFacts{name: "xyz0", major: 250, majorName: "rbd"}, virtual},

		{"SCSI CD-ROM major", blockFacts{name: "xyz0", major: 11}, optical},
		{"sr in /proc/devices", blockFacts{name: "xyz0", major: -1, majorName: "sr"}, optical},
		{"SCSI type 5 (CD/DVD)", blockFacts{name: "xyz0", major: -1, scsiType: "5"}, optical},
		{"SCSI type 4 (WORM)", blockFacts{name: "xyz0", major: -1, scsiType: "4"}, optical},
		{"GENHD_FL_CD (kernel < 5.18)", blockFacts{name: "xyz0", major: -1, capability: 0x119}, optical},
		{"SCSI type 0 (disk)", blockFacts{name: "sdb", major: 8, scsiType: "0", capability: 0x50}, disk},

		// Without any sysfs signal the name still keeps dm-0 and sr0
		// from being disks.
		{"name dm-0, no sysfs", blockFacts{name: "dm-0", major: -1}, virtual},
		{"name sr0, no sysfs", blockFacts{name: "sr0", major: -1}, optical},
	}
	for _, tt := range tests {
		if got := kindOf(tt.f); got != tt.want {
			t.Errorf("%s: kindOf(%+v) = %q, want %q", tt.what, tt.f, got, tt.want)
		}
	}
}

// TestBlockKindTree reads the facts from a sysfs and procfs tree laid out
// the way Linux 6.1 shows each device.
func TestBlockKindTree(t *testing.T) {
	root := t.TempDir()
	w := func(p, content string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dev := func(name, rel, majmin string) {
		t.Helper()
		w(filepath.Join("sys/devices", rel, "dev"), majmin)
		if err := os.MkdirAll(filepath.Join(root, "sys/block"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("../devices", rel), filepath.Join(root, "sys/block", name)); err != nil {
			t.Fatal(err)
		}
	}
	w("proc/devices", "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  7 loop\n  8 sd\n  9 md\n 11 sr\n252 virtblk\n253 device-mapper\n254 mdp\n259 blkext")
	// Names that say nothing: only sysfs can tell.
	dev("disk0", "pci0000:00/0000:00:06.0/virtio2/host0/target0:0:0/0:0:0:0/block/disk0", "8:0")
	w("sys/devices/pci0000:00/0000:00:06.0/virtio2/host0/target0:0:0/0:0:0:0/type", "0")
	dev("disk1", "pci0000:00/0000:00:05.0/virtio1/block/disk1", "252:0")
	dev("disk2", "pci0000:00/0000:00:04.0/nvme/nvme0/disk2", "259:0")
	// A BMC's virtual CD-ROM (USB mass storage, SCSI type 5).
	dev("cd0", "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/cd0", "11:0")
	w("sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/type", "5")
	// device-mapper on a dynamic major, with its dm directory.
	dev("vol0", "virtual/block/vol0", "253:0")
	w("sys/devices/virtual/block/vol0/dm/name", "vg0-root")
	// MD RAID on the mdp major: md directory.
	dev("raid0", "virtual/block/raid0", "254:0")
	w("sys/devices/virtual/block/raid0/md/level", "raid1")
	// Native NVMe multipath: the namespace head is below
	// /sys/devices/virtual/nvme-subsystem, and is a disk.
	dev("nvme1n1", "virtual/nvme-subsystem/nvme-subsys1/nvme1n1", "259:1")

	for name, want := range map[string]string{
		"disk0": diskkind.Disk, "disk1": diskkind.Disk, "disk2": diskkind.Disk, "nvme1n1": diskkind.Disk,
		"cd0": diskkind.Optical, "vol0": diskkind.Virtual, "raid0": diskkind.Virtual,
	} {
		got, err := blockKind(root, name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("blockKind(%s) = %q, want %q (facts %+v)", name, got, want, blockFactsFrom(root, name, nil))
		}
	}
}

func TestParseBlockMajors(t *testing.T) {
	in := "Character devices:\n  1 mem\n  4 /dev/vc/0\n 11 x\n\nBlock devices:\n  7 loop\n 11 sr\n253 device-mapper\n259 blkext\n"
	got, err := parseBlockMajors(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{7: "loop", 11: "sr", 253: "device-mapper", 259: "blkext"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("major %d = %q, want %q", k, got[k], v)
		}
	}
	if m, err := blockMajors(t.TempDir()); m != nil || err != nil {
		t.Errorf("no /proc/devices: %v, %v; want nil, nil", m, err)
	}
}

// TestBlockKindLive classifies the block devices of this machine and checks
// them against what the kernel says directly.
func TestBlockKindLive(t *testing.T) {
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		k, err := BlockKind(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		_, dmErr := os.Stat(filepath.Join("/sys/block", e.Name(), "dm"))
		_, loopErr := os.Stat(filepath.Join("/sys/block", e.Name(), "loop"))
		if (dmErr == nil || loopErr == nil) && k != diskkind.Virtual {
			t.Errorf("%s: kind %q, want virtual", e.Name(), k)
		}
		t.Logf("%s: %s", e.Name(), k)
	}
}

// TestDiskKindsGHWSnapshots collects the ghw snapshots that
// TestCollectGHWSnapshots leaves out: device-mapper volumes are virtual, CD
// drives optical, the rest disks. As there, the inventories are kept as
// goldens in testdata/ghw/, which the controller's size and install-target
// tests read (controller/sizes).
func TestDiskKindsGHWSnapshots(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	dir := filepath.Join(ghwModuleDir(t), "testdata", "snapshots")
	const disk, virtual, optical = diskkind.Disk, diskkind.Virtual, diskkind.Optical
	s390x := map[string]string{"dm-0": virtual, "dm-1": virtual, "dm-2": virtual}
	for _, c := range "abcdefghijklmnop" {
		s390x["sd"+string(c)] = disk
	}
	for file, want := range map[string]map[string]string{
		// sr0 on a new kernel (capability 0): the major alone; vda is
		// on a dynamic major, like zram and device-mapper.
		"linux-amd64-accel":                            {"dm-0": virtual, "sr0": optical, "vda": disk},
		"linux-arm64-c288e0776090cd558ef793b2a4e61939": {"nvme0n1": disk},
		// Two LUNs over 16 paths, assembled by dm-multipath (no WWNs:
		// the snapshot has no udev data nor device attributes).
		"linux-s390x-snapshot": s390x,
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			inv, err := Collect(t.Context(), WithSnapshot(filepath.Join(dir, file+".tar.gz")), WithRequireUUID(false))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, d := range inv.GetDisks() {
				got[d.GetName()] = d.GetKind()
			}
			if len(got) != len(want) {
				t.Errorf("disks %v, want %v", got, want)
			}
			for name, k := range want {
				if got[name] != k {
					t.Errorf("%s: kind %q, want %q", name, got[name], k)
				}
			}
			checkGolden(t, inv, filepath.Join("testdata", "ghw", file+".golden.json"))
		})
	}
}
