package kexec

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/image/fatfs"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	"github.com/anvil-metal/anvil/agent/seed"
	"github.com/anvil-metal/anvil/test/loopdev"
)

func randomBytes(n int, s uint64) []byte {
	r := rand.New(rand.NewPCG(s, s))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// rootfsDisk installs a root filesystem archive with a kernel and initrd
// onto a 1 GiB image, adds the NoCloud seed as the agent does, and returns
// the image and the root partition's PARTUUID.
func rootfsDisk(t *testing.T, kernel, initrd []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		body []byte
	}{{"boot/vmlinuz-6.1.0-10-cloud-amd64", kernel}, {"boot/initrd.img-6.1.0-10-cloud-amd64", initrd}, {"boot/vmlinuz-6.1.0-9-cloud-amd64", []byte("old")}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img := loopdev.SparseFile(t, 1<<30)
	res, err := rootfs.Install(context.Background(), img, true, &buf, "", rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Write(context.Background(), img, seed.Config{InstanceID: "anvil-test", Hostname: "web-1"}); err != nil {
		t.Fatal(err)
	}
	return img, res.Plan.Root.GUID
}

// blsDisk is a GPT image with one FAT32 ESP holding a Boot Loader
// Specification entry with two initrds (microcode first), as a raw UEFI
// cloud image has.
func blsDisk(t *testing.T, files map[string][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bls.img")
	d, err := diskfs.Create(p, 160<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	const start, end = 2048, 2048 + 128<<20/512 - 1
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: start, End: end, Type: gpt.EFISystemPartition, Name: "ESP"}}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := fatfs.Create(file.New(f, false), 128<<20, start*512, 512, "ESP", false)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if dir := path.Dir("/" + name); dir != "/" {
			if err := fsys.Mkdir(dir); err != nil {
				t.Fatal(err)
			}
		}
		w, err := fsys.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestBootLoadsTheRootfsInstallsKernel(t *testing.T) {
	kernel, initrd := randomBytes(3<<20+17, 1), randomBytes(1<<20+3, 2)
	img, rootGUID := rootfsDisk(t, kernel, initrd)
	dry := &DryRun{}
	if err := Boot(context.Background(), img, " console=ttyS0 anvil.extra=1 ", WithSyscalls(dry)); err != nil {
		t.Fatal(err)
	}
	im, loaded, rebooted := dry.Loaded()
	if !loaded || !rebooted {
		t.Fatalf("loaded %v, rebooted %v", loaded, rebooted)
	}
	if !bytes.Equal(im.Kernel, kernel) || !bytes.Equal(im.Initrd, initrd) {
		t.Errorf("kernel %d bytes, initrd %d bytes reached the loader; want the archive's newest (%d, %d)", len(im.Kernel), len(im.Initrd), len(kernel), len(initrd))
	}
	// The root filesystem is found by the PARTUUID the manifest names.
	if want := "root=PARTUUID=" + rootGUID + " ro rootwait console=ttyS0 anvil.extra=1"; im.Cmdline != want {
		t.Errorf("cmdline %q, want %q", im.Cmdline, want)
	}
}

func TestBootUsesARawImagesOwnBootConfig(t *testing.T) {
	kernel, ucode, initrd := randomBytes(2<<20, 3), randomBytes(40<<10, 4), randomBytes(700<<10, 5)
	img := blsDisk(t, map[string][]byte{
		"loader/entries/fedora-6.8.conf": []byte("title Fedora\nversion 6.8\nlinux /vmlinuz-6.8\ninitrd /ucode.img\ninitrd /initramfs-6.8.img\noptions root=UUID=1234-abcd ro quiet\n"),
		"loader/entries/fedora-6.5.conf": []byte("title Old\nversion 6.5\nlinux /vmlinuz-6.8\noptions root=UUID=old\n"),
		"vmlinuz-6.8":                    kernel,
		"ucode.img":                      ucode,
		"initramfs-6.8.img":              initrd,
	})
	dry := &DryRun{}
	if err := Boot(context.Background(), img, "", WithSyscalls(dry)); err != nil {
		t.Fatal(err)
	}
	im, _, _ := dry.Loaded()
	if !bytes.Equal(im.Kernel, kernel) || !bytes.Equal(im.Initrd, append(append([]byte{}, ucode...), initrd...)) {
		t.Errorf("kernel %d bytes, initrd %d bytes: want the entry's kernel and both initrds in order", len(im.Kernel), len(im.Initrd))
	}
	if im.Cmdline != "root=UUID=1234-abcd ro quiet" {
		t.Errorf("cmdline %q: want the image's own", im.Cmdline)
	}
}

func TestBootWithoutInitrdPassesNone(t *testing.T) {
	kernel := randomBytes(1<<20, 6)
	img := blsDisk(t, map[string][]byte{
		"loader/entries/a.conf": []byte("title A\nlinux /vmlinuz\noptions root=/dev/vda2\n"),
		"vmlinuz":               kernel,
	})
	dry := &DryRun{}
	if err := Boot(context.Background(), img, "", WithSyscalls(dry)); err != nil {
		t.Fatal(err)
	}
	if im, _, _ := dry.Loaded(); im.Initrd != nil || !bytes.Equal(im.Kernel, kernel) {
		t.Errorf("initrd %d bytes (want none), kernel %d bytes", len(im.Initrd), len(im.Kernel))
	}
}

func TestBootOrRebootFallsBackToTheFirmware(t *testing.T) {
	kernel := randomBytes(1<<20, 7)
	good := blsDisk(t, map[string][]byte{"loader/entries/a.conf": []byte("title A\nlinux /vmlinuz\n"), "vmlinuz": kernel})
	empty := blsDisk(t, map[string][]byte{"EFI/BOOT/BOOTX64.EFI": []byte("MZ")})
	errLoad, errReboot, errFirmware := errors.New("EPERM: lockdown"), errors.New("EINVAL"), errors.New("firmware says no")
	cases := []struct {
		name        string
		disk        string
		dry         *DryRun
		firmware    error
		want        []error
		wantText    []string
		wantReboots int
	}{
		{"kexec works: no firmware reboot", good, &DryRun{}, nil, nil, nil, 0},
		{"load fails", good, &DryRun{LoadErr: errLoad}, nil, []error{errLoad}, []string{"kexec: load"}, 1},
		{"kexec reboot fails", good, &DryRun{RebootErr: errReboot}, nil, []error{errReboot}, []string{"kexec: reboot"}, 1},
		{"no kernel on the disk", empty, &DryRun{}, nil, []error{bootconfig.ErrNotFound}, nil, 1},
		{"both fail", good, &DryRun{LoadErr: errLoad}, errFirmware, []error{errLoad, errFirmware}, []string{"firmware reboot after the failed kexec"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reboots := 0
			reboot := func(context.Context) error { reboots++; return c.firmware }
			err := BootOrReboot(context.Background(), c.disk, "", reboot, WithSyscalls(c.dry))
			if reboots != c.wantReboots {
				t.Errorf("%d firmware reboots, want %d", reboots, c.wantReboots)
			}
			if len(c.want) == 0 {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("err = %v, want it to wrap %v", err, w)
				}
			}
			for _, w := range c.wantText {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

func TestBootRefusesAnOverlongCmdlineAndStopsWhenCancelled(t *testing.T) {
	img := blsDisk(t, map[string][]byte{"loader/entries/a.conf": []byte("title A\nlinux /vmlinuz\n"), "vmlinuz": []byte("k")})
	dry := &DryRun{}
	if err := Boot(context.Background(), img, strings.Repeat("x", 2048), WithSyscalls(dry)); err == nil || !strings.Contains(err.Error(), "command line") {
		t.Errorf("err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	reboots := 0
	err := BootOrReboot(ctx, img, "", func(context.Context) error { reboots++; return nil }, WithSyscalls(dry))
	if !errors.Is(err, context.Canceled) || reboots != 0 {
		t.Errorf("cancelled: err = %v, %d reboots", err, reboots)
	}
	if _, loaded, _ := dry.Loaded(); loaded {
		t.Error("a cancelled boot loaded a kernel")
	}
}

func TestCmdline(t *testing.T) {
	cases := []struct{ base, extra, want string }{
		{"root=PARTUUID=x ro", "", "root=PARTUUID=x ro"},
		{"root=PARTUUID=x ro", "console=ttyS0,115200", "root=PARTUUID=x ro console=ttyS0,115200"},
		{"", "  a  b ", "a  b"},
		{"quiet", `dyndbg="file x.c +p"`, `quiet dyndbg="file x.c +p"`},
		{"  ", "", ""},
	}
	for _, c := range cases {
		if got := Cmdline(c.base, c.extra); got != c.want {
			t.Errorf("Cmdline(%q, %q) = %q, want %q", c.base, c.extra, got, c.want)
		}
	}
}
