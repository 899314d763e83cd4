package initramfs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/initramfs/modorder"
)

func TestOrderFileRoundTrip(t *testing.T) {
	mods := []modorder.Module{{Name: "virtio_ring"}, {Name: "virtio"}, {Name: "virtio_rng"}}
	got, err := bootenv.ParseOrder(bytes.NewReader(OrderFileContents(mods)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"virtio_ring.ko", "virtio.ko", "virtio_rng.ko"}; !slices.Equal(got, want) {
		t.Errorf("the agent reads %q, want %q", got, want)
	}
}

func TestURootArgs(t *testing.T) {
	c := Defaults()
	c.Version = "v1.2.3"
	mods := []modorder.Module{{Name: "virtio_ring", Path: "/cache/virtio_ring.ko"}, {Name: "virtio_rng", Path: "/cache/virtio-rng.ko"}}
	args := strings.Join(urootArgs(c, mods, "/tmp/b/order", "/tmp/b/grub", "/tmp/b/out.cpio"), "\n")
	for _, want := range []string{
		"tool\nu-root\n-o\n/tmp/b/out.cpio",
		"-base=/dev/null", "-defaultsh=\n",
		"-uinitcmd=anvil-agent --mode boot",
		"-X " + AgentPackage + ".version=v1.2.3",
		"-files\n/cache/virtio_ring.ko:lib/anvil/modules/virtio_ring.ko",
		"-files\n/cache/virtio-rng.ko:lib/anvil/modules/virtio_rng.ko",
		"-files\n/tmp/b/order:lib/anvil/modules/order",
		"-files\n/tmp/b/grub/bootx64.efi:lib/anvil/grub/bootx64.efi",
		"-files\n/tmp/b/grub/core.img:lib/anvil/grub/core.img",
		"-files\n/tmp/b/grub/boot.img:lib/anvil/grub/boot.img",
		"-files\n/tmp/b/grub/VERSION:lib/anvil/grub/VERSION",
		"-files\n/etc/ssl/certs/ca-certificates.crt:etc/ssl/certs/ca-certificates.crt",
		InitPackage + "\n./agent/cmd/anvil-agent",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("u-root arguments lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "lib/modules/") {
		t.Error("modules placed under /lib/modules, where u-root's init would load them alphabetically")
	}
	// The image paths agree with what the agent reads.
	d := bootenv.Defaults()
	if "/"+ModulesDir != d.ModulesDir || OrderFile != d.OrderFile {
		t.Errorf("image has %s/%s, agent reads %s/%s", ModulesDir, OrderFile, d.ModulesDir, d.OrderFile)
	}
}

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	err := Config{Version: "a b"}.Validate()
	for _, want := range []string{"module root", "kernel modules", "CA bundle", "output", "size budget", "version"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func TestCompressDeterministicAndBudget(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "a.cpio")
	data := bytes.Repeat([]byte("070701 initramfs record "), 1<<16)
	noise := make([]byte, 256<<10) // incompressible part
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	data = append(data, noise...)
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r1, err := compress(in, filepath.Join(dir, "1.zst"), 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := compress(in, filepath.Join(dir, "2.zst"), 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r1.SHA256 != r2.SHA256 || r1.Bytes != r2.Bytes {
		t.Errorf("same input, different output: %+v %+v", r1, r2)
	}
	f, err := os.Open(r1.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	back, err := io.ReadAll(dec)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("round trip: %v, %d bytes back of %d", err, len(back), len(data))
	}

	over := filepath.Join(dir, "over.zst")
	res, err := compress(in, over, 100<<10)
	if !errors.Is(err, ErrOverBudget) || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("over budget: err = %v", err)
	}
	if res == nil || res.Bytes != r1.Bytes {
		t.Errorf("over budget result %+v, want the size %d", res, r1.Bytes)
	}
	if _, err := os.Stat(over); !os.IsNotExist(err) {
		t.Errorf("an over-budget image was left at %s: %v", over, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".initramfs-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestDebugShellPathAgrees(t *testing.T) {
	if DebugShell != bootenv.DebugShellPath {
		t.Errorf("image has the shell at %s, the agent starts %s", DebugShell, bootenv.DebugShellPath)
	}
	args := strings.Join(urootArgs(Defaults(), nil, "/o", "/g", "/c"), "\n")
	if !strings.Contains(args, "github.com/u-root/u-root/cmds/core/gosh") {
		t.Error("the image has no shell")
	}
}
