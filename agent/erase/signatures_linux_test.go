package erase

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/test/loopdev"
)

// attach attaches backing as a whole loop device.
func attach(t *testing.T, backing string) string {
	t.Helper()
	dev := strings.TrimSpace(run(t, "", "losetup", "--find", "--show", backing))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// window attaches a loop device over [off, off+n) of backing and returns
// it with its detach. It stands in for the partition's node: the kernel
// these tests run on is built without partition table support (losetup
// --partscan makes no loopNpM), and a window holds the same bytes.
func window(t *testing.T, backing string, off, n int64, readOnly bool) (string, func()) {
	t.Helper()
	args := []string{"--find", "--show", "--offset", fmt.Sprint(off), "--sizelimit", fmt.Sprint(n)}
	if readOnly {
		args = append(args, "--read-only")
	}
	dev := strings.TrimSpace(run(t, "", "losetup", append(args, backing)...))
	return dev, func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	}
}

// signaturesIn lists what wipefs finds in [off, off+n) of backing, through
// a fresh read-only loop device over that window (so no partition table
// and no page cache of the erased device are involved).
func signaturesIn(t *testing.T, backing string, off, n int64) []string {
	t.Helper()
	win, detach := window(t, backing, off, n, true)
	defer detach()
	return strings.Fields(run(t, "", "wipefs", "--no-act", "--noheadings", "--output", "TYPE", win))
}

// mdSuperblock writes a Linux MD superblock as libblkid
// (superblocks/linux_raid.c) and the kernel's md_p.h define it: magic
// a92b4efch little-endian; v0.90 with major 0, minor 90; v1.x with major
// 1 and super_offset (byte 144) naming its own sector. The kernel here
// has no md driver, so mdadm --create cannot run; wipefs below checks the
// bytes are a superblock it recognizes.
func mdSuperblock(t *testing.T, part string, off int64, v1 bool) {
	t.Helper()
	sb := make([]byte, 4096)
	le := binary.LittleEndian
	le.PutUint32(sb[0:], 0xa92b4efc)
	if v1 {
		le.PutUint32(sb[4:], 1)
		le.PutUint64(sb[144:], uint64(off>>9))
	} else {
		le.PutUint32(sb[8:], 90)
	}
	f, err := os.OpenFile(part, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(sb, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// lvmConfig keeps pvcreate to loop devices and away from udev and the
// host's devices file.
const lvmConfig = `devices { filter=["a|^/dev/loop|","r|.*|"] use_devicesfile=0 obtain_device_list_from_udev=0 } activation { udev_sync=0 udev_rules=0 }`

// TestQuickClearsSignaturesInsidePartitions is the bug: the quick erase
// cleared the device's first and last MiB only, and every volume inside a
// partition (LVM PV, MD member, ext4, XFS, btrfs, swap, LUKS) stayed for
// the next system to find. Real tools make the volumes, wipefs sees them
// before and nothing after.
func TestQuickClearsSignaturesInsidePartitions(t *testing.T) {
	const mib = 1 << 20
	type volume struct {
		name   string
		size   int64 // MiB
		create func(t *testing.T, part string, size int64)
		want   string
	}
	volumes := []volume{
		{"LVM2 PV", 16, func(t *testing.T, part string, _ int64) {
			run(t, "", "pvcreate", "--config", lvmConfig, "-ff", "-y", part)
		}, "LVM2_member"},
		{"MD 0.90", 17, func(t *testing.T, part string, size int64) {
			mdSuperblock(t, part, size&^(64<<10-1)-64<<10, false)
		}, "linux_raid_member"},
		{"MD 1.0", 16, func(t *testing.T, part string, size int64) { mdSuperblock(t, part, size&^(4<<10-1)-8<<10, true) }, "linux_raid_member"},
		{"MD 1.1", 16, func(t *testing.T, part string, _ int64) { mdSuperblock(t, part, 0, true) }, "linux_raid_member"},
		{"MD 1.2", 16, func(t *testing.T, part string, _ int64) { mdSuperblock(t, part, 4096, true) }, "linux_raid_member"},
		{"ext4", 16, func(t *testing.T, part string, _ int64) { run(t, "", "mkfs.ext4", "-q", "-F", part) }, "ext4"},
		{"XFS", 300, func(t *testing.T, part string, _ int64) { run(t, "", "mkfs.xfs", "-q", "-f", part) }, "xfs"},
		{"btrfs", 128, func(t *testing.T, part string, _ int64) { run(t, "", "mkfs.btrfs", "-q", "-f", part) }, "btrfs"},
		{"swap", 16, func(t *testing.T, part string, _ int64) { run(t, "", "mkswap", part) }, "swap"},
		{"LUKS2", 32, func(t *testing.T, part string, _ int64) {
			run(t, "secret", "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
				"--pbkdf-force-iterations", "1000", "--key-file", "-", part)
		}, "crypto_LUKS"},
	}
	script := "label: gpt\n"
	var parts []Partition
	start := int64(mib)
	for _, v := range volumes {
		script += fmt.Sprintf("start=%d, size=%d\n", start/512, v.size*mib/512)
		parts = append(parts, Partition{start, v.size * mib})
		start += v.size*mib + mib
	}
	size := start + 2*mib
	backing := loopdev.SparseFile(t, size)
	run(t, script, "sfdisk", "--quiet", backing)
	for i, v := range volumes {
		part, detach := window(t, backing, parts[i].Off, parts[i].Len, false)
		v.create(t, part, v.size*mib)
		detach()
		if got := signaturesIn(t, backing, parts[i].Off, parts[i].Len); !slices.Contains(got, v.want) {
			t.Fatalf("%s in partition %d: wipefs finds %v, want %s", v.name, i+1, got, v.want)
		}
	}
	dev := attach(t, backing)
	if got := signaturesIn(t, backing, 0, size); !slices.Contains(got, "gpt") {
		t.Fatalf("wipefs on the device finds %v, want gpt", got)
	}

	res, err := Quick(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s, %d KiB", dev, res.Method, res.Bytes>>10)
	for i, v := range volumes {
		if got := signaturesIn(t, backing, parts[i].Off, parts[i].Len); len(got) > 0 {
			t.Errorf("%s in partition %d survived the quick erase: wipefs finds %v", v.name, i+1, got)
		}
	}
	if got := signaturesIn(t, backing, 0, size); len(got) > 0 {
		t.Errorf("wipefs on the device after the quick erase finds %v", got)
	}
}
