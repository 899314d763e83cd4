package bootloader_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/agent/image/fatfs"
	"github.com/anvil-metal/anvil/test/loopdev"
)

const diskSize = 64 << 20

// gptDisk writes a GPT with an ESP (p1, from 1 MiB) and the BIOS boot
// partition (p2) to a sparse image and returns its path and partitions.
func gptDisk(t *testing.T) (string, []*gpt.Partition) {
	t.Helper()
	path := loopdev.SparseFile(t, diskSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts := []*gpt.Partition{
		{Index: 1, Start: 2048, End: 2048 + 80*2048 - 1, Type: gpt.EFISystemPartition, Name: "ESP", GUID: "1c7e3b0a-5d2e-4f6a-9b8c-0d1e2f3a4b5c"},
		bootloader.BIOSBootPartition(2, "2c7e3b0a-5d2e-4f6a-9b8c-0d1e2f3a4b5c"),
	}
	tab := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "3c7e3b0a-5d2e-4f6a-9b8c-0d1e2f3a4b5c", Partitions: parts}
	if err := tab.Write(f, diskSize); err != nil {
		t.Fatal(err)
	}
	return path, parts
}

func grubFiles(t *testing.T) bootloader.Files {
	t.Helper()
	f, err := mkgrub.Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestInstallBIOSMatchesGrubBiosSetup installs the same boot.img and
// core.img with InstallBIOS and with GRUB's own grub-bios-setup (Debian's
// grub-pc-bin, no Reed-Solomon codes, the disk on a loop device) and
// compares the first MiB of both disks byte for byte.
func TestInstallBIOSMatchesGrubBiosSetup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("grub-bios-setup works on loop devices, which need root")
	}
	files := grubFiles(t)
	ours, parts := gptDisk(t)
	f, err := os.OpenFile(ours, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bootloader.InstallBIOS(f, files, parts, 512); err != nil {
		t.Fatal(err)
	}
	f.Close()

	theirs, _ := gptDisk(t)
	dir := t.TempDir()
	// grub-bios-setup reads its images from a directory on a filesystem it
	// can name as a GRUB device: a small ext2 volume on a second loop device.
	side := loopdev.New(t, 8<<20)
	run(t, "mkfs.ext2", "-q", side)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", side, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for name, b := range map[string][]byte{"boot.img": files.BIOSBoot, "core.img": files.BIOSCore} {
		if err := os.WriteFile(filepath.Join(mnt, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dev := run(t, "losetup", "--find", "--show", theirs)
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	devmap := filepath.Join(dir, "device.map")
	if err := os.WriteFile(devmap, []byte("(hd0) "+dev+"\n(hd1) "+side+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "/usr/lib/grub/i386-pc/grub-bios-setup", "--no-rs-codes", "-d", mnt, "-m", devmap, dev)
	run(t, "losetup", "--detach", dev)

	a, b := firstMiB(t, ours), firstMiB(t, theirs)
	if !bytes.Equal(a[:512], b[:512]) {
		t.Errorf("sector 0 differs from grub-bios-setup's at %v", diffs(a[:512], b[:512]))
	}
	if !bytes.Equal(a[512:], b[512:]) {
		t.Errorf("sectors 1-2047 differ from grub-bios-setup's at %v", diffs(a[512:], b[512:]))
	}
}

func firstMiB(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func diffs(a, b []byte) []int {
	var d []int
	for i := range a {
		if a[i] != b[i] && len(d) < 10 {
			d = append(d, i)
		}
	}
	return d
}

func TestInstallBIOSNeedsTheBIOSBootPartition(t *testing.T) {
	files := grubFiles(t)
	p, parts := gptDisk(t)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := firstMiB(t, p)
	if err := bootloader.InstallBIOS(f, files, parts[:1], 512); err == nil || !strings.Contains(err.Error(), "no BIOS boot partition") {
		t.Errorf("without a BIOS boot partition: %v", err)
	}
	moved := *parts[1]
	moved.Start = 40
	if err := bootloader.InstallBIOS(f, files, []*gpt.Partition{parts[0], &moved}, 512); err == nil {
		t.Error("a BIOS boot partition elsewhere was accepted")
	}
	if err := bootloader.InstallBIOS(f, files, parts, 4096); err == nil || !strings.Contains(err.Error(), "512-byte sectors") {
		t.Errorf("4096-byte sectors: %v", err)
	}
	if !bytes.Equal(before, firstMiB(t, p)) {
		t.Error("a refused install wrote to the disk")
	}
}

// TestInspect finds what a disk boots with: nothing on a bare GPT disk;
// UEFI and BIOS once both are installed.
func TestInspect(t *testing.T) {
	files := grubFiles(t)
	p, parts := gptDisk(t)
	r, err := bootloader.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.FirmwareBootable() || !strings.HasPrefix(r.String(), "boots only by kexec") {
		t.Errorf("bare disk: %+v %s", r, r)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	esp, err := fatfs.Create(file.New(f, false), int64(parts[0].End-parts[0].Start+1)*512, int64(parts[0].Start)*512, 512, "ESP", false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := bootloader.Config(bootloader.Entry{Title: "x", Kernel: "/vmlinuz"})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range bootloader.ESPFiles(files, cfg) {
		if err := esp.Mkdir(path.Dir(name)); err != nil {
			t.Fatal(err)
		}
		w, err := esp.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := bootloader.InstallBIOS(f, files, parts, 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, err = bootloader.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `boots from disk on UEFI (p1:\EFI\BOOT\BOOTX64.EFI) and BIOS (MBR boot code, BIOS boot partition p2)`
	if r.String() != want || !r.Removable || r.Loader != "EFI/BOOT/BOOTX64.EFI" || r.ESP != 1 || r.ESPGUID != "1c7e3b0a-5d2e-4f6a-9b8c-0d1e2f3a4b5c" || r.ESPStart != 2048 || r.ESPSize != 80*2048 {
		t.Errorf("installed disk: removable %v ESP p%d %s [%d+%d]\n%s\nwant %s", r.Removable, r.ESP, r.ESPGUID, r.ESPStart, r.ESPSize, r, want)
	}
}
