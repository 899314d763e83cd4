package tiny_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/images/tiny"
)

// built returns the image `make images-tiny` built (images/out, or
// ANVIL_TINY_DIR) and its catalogue entry, or fails: make test builds the
// image before it runs the tests.
func built(t *testing.T) (dir string, cat tiny.Catalogue) {
	t.Helper()
	dir = os.Getenv("ANVIL_TINY_DIR")
	if dir == "" {
		var err error
		if dir, err = filepath.Abs("../out"); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := tiny.ReadCatalogue(filepath.Join(dir, tiny.CatalogueFile))
	if err != nil {
		t.Fatalf("no tiny image in %s (make test builds it first; by hand: make images-tiny): %v", dir, err)
	}
	return dir, cat
}

func sha256File(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n
}

// TestBuiltCatalogue checks the catalogue against the files: sizes,
// digests, and that the .zst decodes to the raw image.
func TestBuiltCatalogue(t *testing.T) {
	dir, cat := built(t)
	if cat.Format != "raw-zstd" || cat.OS != "anvil-tiny" || cat.ID == "" || cat.Version == "" || cat.Kernel == "" {
		t.Errorf("catalogue %+v", cat)
	}
	zsum, zn := sha256File(t, filepath.Join(dir, cat.File))
	rsum, rn := sha256File(t, filepath.Join(dir, cat.RawFile))
	if zsum != cat.Checksum || zn != cat.Size {
		t.Errorf("%s: %s, %d bytes; catalogue says %s, %d bytes", cat.File, zsum, zn, cat.Checksum, cat.Size)
	}
	if rsum != cat.RawChecksum || rn != cat.RawSize || rn != tiny.ImageSize {
		t.Errorf("%s: %s, %d bytes; catalogue says %s, %d bytes", cat.RawFile, rsum, rn, cat.RawChecksum, cat.RawSize)
	}
	f, err := os.Open(filepath.Join(dir, cat.File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h := sha256.New()
	if _, err := io.Copy(h, dec); err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cat.RawChecksum {
		t.Errorf("%s decodes to %s, want the raw image's %s", cat.File, got, cat.RawChecksum)
	}
}

// TestBuiltImage checks the raw image's structure: the GPT, the boot
// configuration the agent finds (kernel, initrd, cmdline), the initramfs
// inside, both filesystems clean by dosfstools and e2fsprogs, and
// os-release on the root.
func TestBuiltImage(t *testing.T) {
	dir, cat := built(t)
	raw := filepath.Join(dir, cat.RawFile)

	d, err := diskfs.Open(raw, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	tbl, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table is %T, want GPT", pt)
	}
	var parts []string
	for _, p := range tbl.Partitions {
		if p.Type != gpt.Unused {
			parts = append(parts, fmt.Sprintf("%d %s %q %d+%d", p.Index, p.Type, p.Name, p.Start*512, (p.End-p.Start+1)*512))
		}
	}
	want := []string{
		fmt.Sprintf("1 %s %q %d+%d", gpt.EFISystemPartition, "EFI System Partition", tiny.ESPStart, tiny.ESPSize),
		fmt.Sprintf("2 %s %q %d+%d", gpt.LinuxFilesystem, tiny.RootLabel, tiny.RootStart, tiny.RootSize),
		fmt.Sprintf("3 %s %q %d+%d", strings.ToUpper(bootloader.BIOSBootType), bootloader.BIOSBootName, bootloader.BIOSBootFirst*512, (bootloader.BIOSBootLast-bootloader.BIOSBootFirst+1)*512),
	}
	if strings.Join(parts, "\n") != strings.Join(want, "\n") {
		t.Errorf("partitions:\n%s\nwant:\n%s", strings.Join(parts, "\n"), strings.Join(want, "\n"))
	}
	if p := tbl.Partitions[1]; !strings.EqualFold(p.GUID, tiny.RootPartUUID()) {
		t.Errorf("root PARTUUID %s, want %s", p.GUID, tiny.RootPartUUID())
	}

	b, err := bootconfig.Lookup(raw)
	if err != nil {
		t.Fatal(err)
	}
	if b.Kernel.String() != "p1:/"+tiny.KernelPath || len(b.Initrds) != 1 || b.Initrds[0].String() != "p1:/"+tiny.InitrdPath {
		t.Errorf("boot configuration %s", b.Describe())
	}
	if b.Cmdline != tiny.Cmdline || !strings.Contains(b.Cmdline, "console=ttyS0") || !strings.HasPrefix(b.Source, "manifest") {
		t.Errorf("boot configuration %s: want the manifest with cmdline %q", b.Describe(), tiny.Cmdline)
	}
	kernel, err := bootconfig.ReadFile(raw, b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	if len(kernel) < 0x206 || string(kernel[0x202:0x206]) != "HdrS" {
		t.Error("the kernel is not a bzImage")
	}
	initrd, err := bootconfig.ReadFile(raw, b.Initrds[0])
	if err != nil {
		t.Fatal(err)
	}
	checkInitramfs(t, initrd)

	checkFilesystems(t, raw)

	// GRUB for both firmwares, reading the configuration that boots the
	// manifest's kernel (test/images boots it under SeaBIOS and OVMF).
	rep, err := bootloader.Inspect(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := `boots from disk on UEFI (p1:\EFI\BOOT\BOOTX64.EFI) and BIOS (MBR boot code, BIOS boot partition p3)`; rep.String() != want {
		t.Errorf("bootloader: %s, want %s", rep, want)
	}
	esp, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := esp.ReadFile(bootloader.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, err := tiny.GrubConfig(tiny.Inputs{Version: cat.Version, KernelRelease: cat.Kernel})
	if err != nil || string(cfg) != wantCfg {
		t.Errorf("grub.cfg:\n%s\nwant:\n%s (%v)", cfg, wantCfg, err)
	}

	root, err := d.GetFilesystem(2)
	if err != nil {
		t.Fatal(err)
	}
	osr, err := root.ReadFile(tiny.OSReleasePath)
	if err != nil {
		t.Fatal(err)
	}
	if want := tiny.OSRelease(tiny.Inputs{Version: cat.Version, KernelRelease: cat.Kernel}); string(osr) != want {
		t.Errorf("os-release:\n%s\nwant:\n%s", osr, want)
	}
}

// checkInitramfs wants u-root's init, tiny-init as the uinit, the kernel
// modules and their order file in the zstd-compressed newc archive.
func checkInitramfs(t *testing.T, initrd []byte) {
	t.Helper()
	dec, err := zstd.NewReader(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	archive, err := io.ReadAll(dec)
	if err != nil {
		t.Fatalf("initrd is not zstd: %v", err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(archive)))
	if err != nil {
		t.Fatalf("initrd is not a newc archive: %v", err)
	}
	files := map[string]cpio.Record{}
	for _, r := range recs {
		files[r.Name] = r
	}
	for _, want := range []string{"init", "bbin/init", "bbin/tiny-init", "bin/uinit", "lib/anvil/modules/order", "lib/anvil/modules/virtio_blk.ko", "lib/anvil/modules/virtio_net.ko"} {
		if _, ok := files[want]; !ok {
			t.Errorf("initramfs has no %s", want)
		}
	}
	for name := range files {
		if strings.HasPrefix(name, "lib/modules/") {
			t.Errorf("initramfs has %s: u-root's init would load it out of order", name)
		}
	}
}

// checkFilesystems runs fsck.vfat -n on a copy of the ESP and e2fsck -fn
// on the root in place: no complaints.
func checkFilesystems(t *testing.T, raw string) {
	t.Helper()
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		t.Log("fsck.vfat not found; ESP not checked (hack/install-deps.sh installs dosfstools)")
	} else {
		f, err := os.Open(raw)
		if err != nil {
			t.Fatal(err)
		}
		esp := make([]byte, tiny.ESPSize)
		_, err = f.ReadAt(esp, tiny.ESPStart)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "esp.img")
		if err := os.WriteFile(p, esp, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput()
		if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 1 {
			t.Errorf("fsck.vfat -n: %v\n%s", err, out)
		}
	}
	if _, err := exec.LookPath("e2fsck"); err != nil {
		t.Log("e2fsck not found; root not checked (hack/install-deps.sh installs e2fsprogs)")
	} else if out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", raw, tiny.RootStart)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("sfdisk"); err == nil {
		if out, err := exec.Command("sfdisk", "--verify", raw).CombinedOutput(); err != nil {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
	}
}

// TestReproducible assembles the image again from the kernel and initrd
// inside it and the catalogue's version, release and epoch: the same bytes
// as the built raw image.
func TestReproducible(t *testing.T) {
	dir, cat := built(t)
	raw := filepath.Join(dir, cat.RawFile)
	b, err := bootconfig.Lookup(raw)
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := bootconfig.ReadFile(raw, b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := bootconfig.ReadFile(raw, b.Initrds[0])
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "again.raw")
	grub, err := mkgrub.Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	in := tiny.Inputs{Kernel: kernel, Initrd: initrd, KernelRelease: cat.Kernel, Version: cat.Version, Epoch: cat.EpochTime(), Bootloader: grub}
	if err := tiny.Assemble(again, in); err != nil {
		t.Fatal(err)
	}
	if got, _ := sha256File(t, again); got != cat.RawChecksum {
		t.Errorf("reassembled image %s, built image %s", got, cat.RawChecksum)
	}
}
