package tiny

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/bootloader"

	"github.com/anvil-metal/anvil/initramfs/modorder"
)

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("Defaults: %v", err)
	}
	bad := Config{Version: "a b", Epoch: time.Unix(0, 0)}
	err := bad.Validate()
	for _, want := range []string{"module root", "kernel directory", "output directory", "go command", "version", "1980", "initrd budget"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%+v) = %v, want %q in it", bad, err, want)
		}
	}
}

func TestInputsValidate(t *testing.T) {
	kernel := make([]byte, 0x300)
	copy(kernel[0x202:], "HdrS")
	boot := make([]byte, 512)
	boot[510], boot[511] = 0x55, 0xaa
	grub := bootloader.Files{EFI: append([]byte("MZ"), make([]byte, 100)...), BIOSBoot: boot, BIOSCore: make([]byte, 4096)}
	good := Inputs{Kernel: kernel, Initrd: []byte{1}, KernelRelease: "6.1.0-57-cloud-amd64", Version: "v1", Epoch: time.Unix(1735689600, 0), Bootloader: grub}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Inputs)
		want string
	}{
		{"not a bzImage", func(in *Inputs) { in.Kernel = []byte("ELF") }, "not a bzImage"},
		{"no initrd", func(in *Inputs) { in.Initrd = nil }, "initrd is empty"},
		{"no release", func(in *Inputs) { in.KernelRelease = "" }, "kernel release"},
		{"quoted version", func(in *Inputs) { in.Version = `v"1` }, "version"},
		{"too big for the ESP", func(in *Inputs) { in.Initrd = make([]byte, ESPSize) }, "ESP holds at most"},
		{"no GRUB", func(in *Inputs) { in.Bootloader = bootloader.Files{} }, "GRUB images"},
	}
	for _, tc := range tests {
		in := good
		tc.edit(&in)
		if err := in.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestLayout(t *testing.T) {
	if ESPStart%(1<<20) != 0 || RootStart%(1<<20) != 0 || RootSize%(1<<20) != 0 {
		t.Errorf("partitions not 1 MiB aligned: ESP %d, root %d+%d", ESPStart, RootStart, RootSize)
	}
	if RootStart+RootSize+1<<20 != ImageSize {
		t.Errorf("root ends at %d, want the last MiB (%d) free for the backup GPT", RootStart+RootSize, ImageSize-1<<20)
	}
	if ESPSize < 33<<20 {
		t.Errorf("ESP %d bytes is below FAT32's minimum", ESPSize)
	}
	// Name-based: the same every build, distinct per use.
	if guid("esp") != guid("esp") || guid("esp") == RootPartUUID() || RootPartUUID() != "f206cacf-ed47-5981-aa4b-ff0d6b155e86" {
		t.Errorf("GUIDs are not stable and distinct: esp %s, root %s", guid("esp"), RootPartUUID())
	}
}

func TestManifestJSON(t *testing.T) {
	b, err := ManifestJSON(Inputs{KernelRelease: "6.1.0-57-cloud-amd64", Version: "v7"})
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := Manifest{Title: "anvil-tiny v7 (kernel 6.1.0-57-cloud-amd64)", Kernel: "vmlinuz", Initrd: "initrd.img", Cmdline: "console=ttyS0,115200 panic=-1"}
	if m != want {
		t.Errorf("manifest %+v, want %+v", m, want)
	}
}

func TestOSRelease(t *testing.T) {
	got := OSRelease(Inputs{KernelRelease: "6.1", Version: "v7"})
	for _, line := range []string{"ID=anvil-tiny", "VERSION_ID=v7", `PRETTY_NAME="anvil tiny v7 (CI image, kernel 6.1)"`} {
		if !slices.Contains(strings.Split(got, "\n"), line) {
			t.Errorf("os-release has no line %q:\n%s", line, got)
		}
	}
}

func TestReadRelease(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "release")
	if err := os.WriteFile(p, []byte("6.1.0-57-cloud-amd64 6.1.192-3\nmodules: virtio\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadRelease(p); err != nil || got != "6.1.0-57-cloud-amd64" {
		t.Errorf("ReadRelease = %q, %v", got, err)
	}
	if err := os.WriteFile(p, []byte("\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRelease(p); err == nil {
		t.Error("ReadRelease of an empty release: no error")
	}
}

func TestURootArgs(t *testing.T) {
	c := Defaults()
	c.Version = "v9"
	mods := []modorder.Module{{Name: "virtio", Path: "/k/virtio.ko"}, {Name: "virtio_blk", Path: "/k/virtio_blk.ko"}}
	args := urootArgs(c, mods, "/b/order", "/b/out.cpio")
	joined := strings.Join(args, "\n")
	for _, want := range []string{
		"-o\n/b/out.cpio", "-base=/dev/null", "-uinitcmd=tiny-init", "-go-extra-args=-a=false",
		"-X " + InitPackage + ".version=v9",
		"-files\n/k/virtio.ko:lib/anvil/modules/virtio.ko", "-files\n/k/virtio_blk.ko:lib/anvil/modules/virtio_blk.ko",
		"-files\n/b/order:lib/anvil/modules/order",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("u-root arguments have no %q:\n%s", want, joined)
		}
	}
	if n := len(args); args[n-2] != "github.com/u-root/u-root/cmds/core/init" || args[n-1] != "./images/tiny/cmd/tiny-init" {
		t.Errorf("u-root arguments end in %q, want init and tiny-init", args[n-2:])
	}
}

func TestCatalogueRoundTrip(t *testing.T) {
	in := Inputs{KernelRelease: "6.1", Version: "v1", Epoch: time.Unix(1735689600, 0)}
	c := NewCatalogue(in, Sums{RawBytes: ImageSize, ZstBytes: 123, RawSHA256: "aa", ZstSHA256: "bb"})
	if c.Checksum != "sha256:bb" || c.RawChecksum != "sha256:aa" || c.Format != "raw-zstd" || c.File != ZstFile || c.OS != "anvil-tiny" {
		t.Errorf("catalogue %+v", c)
	}
	b, err := c.JSON()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), CatalogueFile)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCatalogue(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != c || !got.EpochTime().Equal(in.Epoch) {
		t.Errorf("read back %+v, want %+v", got, c)
	}
}
