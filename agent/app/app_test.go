package app

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	"github.com/anvil-metal/anvil/agent/kexec"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

func TestHostModeNeverBootsTheInstalledSystem(t *testing.T) {
	if b := bootInstalled(ModeHost, func(context.Context) error { t.Fatal("rebooted"); return nil }); b != nil {
		t.Fatal("host mode has a boot step after installs")
	}
}

func TestBootModeKexecsWithTheExtraCmdlineAndFallsBack(t *testing.T) {
	buf := tarOf(t, map[string]string{"boot/vmlinuz-6.1": "the kernel", "boot/initrd.img-6.1": "the initrd"})
	img := loopdev.SparseFile(t, 1<<30)
	res, err := rootfs.Install(context.Background(), img, true, buf, "", rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	spec := &anvilv1.Install{ExtraKernelCmdline: "console=ttyS0"}

	reboots := 0
	reboot := func(context.Context) error { reboots++; return errors.New("no firmware here") }
	dry := &kexec.DryRun{}
	if err := bootInstalled(ModeBoot, reboot, kexec.WithSyscalls(dry))(context.Background(), img, spec); err != nil {
		t.Fatal(err)
	}
	im, loaded, rebooted := dry.Loaded()
	if !loaded || !rebooted || reboots != 0 || string(im.Kernel) != "the kernel" || string(im.Initrd) != "the initrd" ||
		im.Cmdline != "root=PARTUUID="+res.Plan.Root.GUID+" ro rootwait console=ttyS0" {
		t.Errorf("loaded %v rebooted %v firmware reboots %d: %q %q %q", loaded, rebooted, reboots, im.Kernel, im.Initrd, im.Cmdline)
	}

	failing := &kexec.DryRun{LoadErr: errors.New("EPERM")}
	err = bootInstalled(ModeBoot, reboot, kexec.WithSyscalls(failing))(context.Background(), img, spec)
	if reboots != 1 || !errors.Is(err, failing.LoadErr) {
		t.Errorf("failed kexec: %d firmware reboots, err %v", reboots, err)
	}
}

// TestKexecAddsTheMachineConsole: a boot configuration without console=
// gets the machine's, before the install's extra arguments; one with a
// console keeps its own.
func TestKexecAddsTheMachineConsole(t *testing.T) {
	for _, c := range []struct{ manifest, want string }{
		{`{"kernel": "boot/vmlinuz-6.1", "cmdline": "root=LABEL=x ro"}`, "root=LABEL=x ro console=ttyS1,115200 quiet"},
		{`{"kernel": "boot/vmlinuz-6.1", "cmdline": "root=LABEL=x console=tty0"}`, "root=LABEL=x console=tty0 quiet"},
	} {
		buf := tarOf(t, map[string]string{"boot/vmlinuz-6.1": "the kernel", "boot/efi/anvil/boot.json": c.manifest})
		img := loopdev.SparseFile(t, 1<<30)
		if _, err := rootfs.Install(context.Background(), img, true, buf, "", rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}}); err != nil {
			t.Fatal(err)
		}
		dry := &kexec.DryRun{}
		boot := bootInstalled(ModeBoot, func(context.Context) error { return nil }, kexec.WithSyscalls(dry), kexec.WithConsole("console=ttyS1,115200"))
		if err := boot(context.Background(), img, &anvilv1.Install{ExtraKernelCmdline: "quiet"}); err != nil {
			t.Fatal(err)
		}
		if im, _, _ := dry.Loaded(); im.Cmdline != c.want {
			t.Errorf("cmdline %q, want %q", im.Cmdline, c.want)
		}
	}
}

// TestFirmwareBootInHostModeOnlyInspects: host mode reports what the disk
// boots with and never reaches for the host's firmware variables (no
// "UEFI:" entry report, no word of this machine's firmware).
func TestFirmwareBootInHostModeOnlyInspects(t *testing.T) {
	grub, err := mkgrub.Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	img := loopdev.SparseFile(t, 1<<30)
	if _, err := rootfs.Install(context.Background(), img, true, tarOf(t, map[string]string{"boot/vmlinuz-6.1": "kern"}), "", rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}, Bootloader: &grub}); err != nil {
		t.Fatal(err)
	}
	got := firmwareBoot(ModeHost)(context.Background(), img, &anvilv1.Install{ImageId: "x"})
	want := `boots from disk on UEFI (p1:\EFI\BOOT\BOOTX64.EFI) and BIOS (MBR boot code, BIOS boot partition p3)`
	if got != want {
		t.Errorf("host mode: %q, want %q", got, want)
	}
	if bare := firmwareBoot(ModeHost)(context.Background(), loopdev.SparseFile(t, 64<<20), &anvilv1.Install{}); !strings.HasPrefix(bare, "boots only by kexec") {
		t.Errorf("a disk without loaders: %q", bare)
	}
}

// tarOf is a root filesystem archive of regular files.
func tarOf(t *testing.T, files map[string]string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// --controller (or anvil.controller=) may name several replicas; a list
// the runner could not use is refused with the flag's name.
func TestValidateControllerList(t *testing.T) {
	ok := Config{Mode: ModeHost, Disks: []string{"/dev/loop0"}, BootToken: "t", CAFingerprint: "sha256:00"}
	for _, c := range []string{"10.0.2.2:7443", "10.0.2.2:7443,10.0.2.3:7443", "anvil.example.net:7443"} {
		cfg := ok
		cfg.Controller = c
		if err := cfg.Validate(); err != nil {
			t.Errorf("controller %q: %v", c, err)
		}
	}
	for _, c := range []string{"", "10.0.2.2:7443,10.0.2.2:7443", "10.0.2.2", "10.0.2.2:7443,"} {
		cfg := ok
		cfg.Controller = c
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--controller") {
			t.Errorf("controller %q: %v, want a refusal naming --controller", c, err)
		}
	}
}
