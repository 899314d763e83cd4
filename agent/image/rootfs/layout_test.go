package rootfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/bootloader"
)

func seqGUID() func() string {
	n := 0
	return func() string {
		n++
		return fmt.Sprintf("%08X-0000-4000-8000-000000000000", n)
	}
}

func TestPlanDisk(t *testing.T) {
	cases := []struct {
		name                 string
		size, sector         int64
		l                    Layout
		espStart, espEnd     uint64
		rootStart, rootEnd   uint64
		wantErr              error
		wantErrText          bool
		espBytes, rootMinMiB int64
	}{
		// 8 GiB, 512-byte sectors: ESP [1 MiB, 513 MiB), root up to the
		// 65 MiB reserve (seed partition and backup GPT).
		{name: "8GiB/512", size: 8 << 30, sector: 512, espStart: 2048, espEnd: 2048 + 512*2048 - 1,
			rootStart: 2048 + 512*2048, rootEnd: (8<<30-65<<20)/512 - 1},
		{name: "8GiB/4096", size: 8 << 30, sector: 4096, espStart: 256, espEnd: 256 + 512*256 - 1,
			rootStart: 256 + 512*256, rootEnd: (8<<30-65<<20)/4096 - 1},
		// A size that is not a whole MiB: the root end is aligned down.
		{name: "unaligned size", size: 1<<30 + 12345, sector: 512, l: Layout{ESPSize: 64 << 20},
			espStart: 2048, espEnd: 2048 + 64*2048 - 1, rootStart: 2048 + 64*2048, rootEnd: (1<<30-65<<20)/512 - 1},
		// Only the backup GPT's MiB reserved.
		{name: "no seed room", size: 8 << 30, sector: 512, l: Layout{Reserve: 1 << 20}, espStart: 2048, espEnd: 2048 + 512*2048 - 1,
			rootStart: 2048 + 512*2048, rootEnd: (8<<30-1<<20)/512 - 1},
		{name: "reserve below the backup GPT", size: 8 << 30, sector: 512, l: Layout{Reserve: 4096}, wantErrText: true},
		{name: "too small", size: 600 << 20, sector: 512, wantErr: ErrDiskTooSmall},
		{name: "odd sector", size: 8 << 30, sector: 520, wantErrText: true},
		{name: "tiny ESP", size: 8 << 30, sector: 512, l: Layout{ESPSize: 1 << 20}, wantErrText: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := PlanDisk(c.size, c.sector, c.l, seqGUID())
			switch {
			case c.wantErr != nil:
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			case c.wantErrText:
				if err == nil {
					t.Fatalf("plan %+v accepted", p)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if p.ESP.Start != c.espStart || p.ESP.End != c.espEnd || p.Root.Start != c.rootStart || p.Root.End != c.rootEnd {
				t.Errorf("plan %+v, want ESP [%d,%d] root [%d,%d]", p, c.espStart, c.espEnd, c.rootStart, c.rootEnd)
			}
			if p.ESP.GUID != "00000001-0000-4000-8000-000000000000" || p.Root.GUID != "00000002-0000-4000-8000-000000000000" {
				t.Errorf("GUIDs %s %s: want lower case, in order", p.ESP.GUID, p.Root.GUID)
			}
			// Partitions start on MiB boundaries and leave room for the backup GPT.
			for _, part := range []Part{p.ESP, p.Root} {
				if int64(part.Start)*c.sector%(1<<20) != 0 {
					t.Errorf("p%d starts at byte %d, not MiB-aligned", part.Index, int64(part.Start)*c.sector)
				}
			}
			if end := int64(p.Root.End+1) * c.sector; end > c.size-33*512 {
				t.Errorf("root ends at byte %d, inside the backup GPT of a %d-byte disk", end, c.size)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	cases := []struct {
		name   string
		target Target
		path   string
	}{
		{"./", Skip, ""},
		{".", Skip, ""},
		{"/", Skip, ""},
		{"./etc/hostname", Root, "etc/hostname"},
		{"etc/", Root, "etc"},
		{"boot/efi", Root, "boot/efi"},
		{"./boot/efi/", Root, "boot/efi"},
		{"boot/efi/EFI/BOOT/BOOTX64.EFI", ESP, "EFI/BOOT/BOOTX64.EFI"},
		{"boot/efiX/file", Root, "boot/efiX/file"},
		{"../../etc/shadow", Root, "etc/shadow"},
		{"/abs/path", Root, "abs/path"},
		{"a/../../boot/efi/x", ESP, "x"},
	}
	for _, c := range cases {
		if tg, p := Route(c.name, Layout{}); tg != c.target || p != c.path {
			t.Errorf("Route(%q) = %v %q, want %v %q", c.name, tg, p, c.target, c.path)
		}
	}
	if tg, p := Route("efi/x", Layout{ESPMount: "/efi/"}); tg != ESP || p != "x" {
		t.Errorf("custom mount: %v %q", tg, p)
	}
}

func TestPickKernel(t *testing.T) {
	files := map[string]bool{
		"boot/vmlinuz-6.1.0-9-amd64":      true,
		"boot/vmlinuz-6.1.0-10-amd64":     true,
		"boot/initrd.img-6.1.0-10-amd64":  true,
		"boot/initrd.img-6.1.0-9-amd64":   true,
		"boot/vmlinuz-":                   true,
		"boot/sub/vmlinuz-9.9":            true,
		"usr/lib/vmlinuz-99":              true,
		"boot/config-6.1.0-10-amd64":      true,
		"boot/System.map-6.1.0-10-amd64":  true,
		"boot/initramfs-5.14.0-1.el9.img": true,
		"boot/vmlinuz-5.14.0-1.el9":       true,
	}
	k, ok := PickKernel(files)
	if !ok || k != (Kernel{Version: "6.1.0-10-amd64", Path: "boot/vmlinuz-6.1.0-10-amd64", Initrd: "boot/initrd.img-6.1.0-10-amd64"}) {
		t.Errorf("PickKernel = %+v %v", k, ok)
	}
	k, ok = PickKernel(map[string]bool{"boot/vmlinuz-5.14.0-1.el9": true, "boot/initramfs-5.14.0-1.el9.img": true})
	if !ok || k.Initrd != "boot/initramfs-5.14.0-1.el9.img" {
		t.Errorf("dracut naming: %+v %v", k, ok)
	}
	if k, ok := PickKernel(map[string]bool{"etc/hostname": true}); ok {
		t.Errorf("no kernel: got %+v", k)
	}
}

func TestFstabAndManifest(t *testing.T) {
	p, err := PlanDisk(8<<30, 512, Layout{}, seqGUID())
	if err != nil {
		t.Fatal(err)
	}
	want := `# /etc/fstab: written by anvil-agent for the disk it installed.
# <file system>                                 <mount point>  <type>  <options>          <dump> <pass>
PARTUUID=00000002-0000-4000-8000-000000000000  /              ext4    errors=remount-ro  0      1
PARTUUID=00000001-0000-4000-8000-000000000000  /boot/efi      vfat    umask=0077         0      2
`
	if got := Fstab(p, Layout{}); got != want {
		t.Errorf("fstab:\n%s\nwant:\n%s", got, want)
	}
	k := Kernel{Version: "6.1", Path: "boot/vmlinuz-6.1", Initrd: "boot/initrd.img-6.1"}
	b, err := Manifest(k, p, "console=ttyS0,115200")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["kernel"] != "boot/vmlinuz-6.1" || m["initrd"] != "boot/initrd.img-6.1" || m["cmdline"] != "root=PARTUUID=00000002-0000-4000-8000-000000000000 ro rootwait console=ttyS0,115200" {
		t.Errorf("manifest %s", b)
	}
	// GRUB: the distribution's links first when the archive has them,
	// then the manifest's kernel; the root found by its ext4 UUID (the
	// partition's GUID).
	cfg, err := bootloader.Config(GrubEntries(k, p, Cmdline(p, "quiet"), true, true)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"menuentry 'newest kernel (/vmlinuz)' {\n\tsearch --no-floppy --fs-uuid --set=root 00000002-0000-4000-8000-000000000000\n\techo 'anvil: loading /vmlinuz'\n\tlinux /vmlinuz root=PARTUUID=00000002-0000-4000-8000-000000000000 ro rootwait quiet\n\tinitrd /initrd.img\n}",
		"menuentry 'kernel 6.1' {\n\tsearch --no-floppy --fs-uuid --set=root 00000002-0000-4000-8000-000000000000\n\techo 'anvil: loading /boot/vmlinuz-6.1'\n\tlinux /boot/vmlinuz-6.1 root=PARTUUID=00000002-0000-4000-8000-000000000000 ro rootwait quiet\n\tinitrd /boot/initrd.img-6.1\n}",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg lacks\n%s\nin\n%s", want, cfg)
		}
	}
	if es := GrubEntries(Kernel{Version: "6.1", Path: "boot/vmlinuz-6.1"}, p, "", false, false); len(es) != 1 || len(es[0].Initrds) != 0 {
		t.Errorf("no links, no initrd: %+v", es)
	}
	// A /vmlinuz link without /initrd.img: the first entry loads no initrd
	// (the manifest's kernel, the fallback, keeps its own).
	if es := GrubEntries(k, p, "", true, false); len(es) != 2 || len(es[0].Initrds) != 0 || len(es[1].Initrds) != 1 {
		t.Errorf("vmlinuz link only: %+v", es)
	}
	bp := p.WithBIOSBoot("00000003-0000-4000-8000-000000000000")
	if bp.BIOSBoot == nil || bp.BIOSBoot.Start != 34 || bp.BIOSBoot.End != 2047 || bp.BIOSBoot.Index != 3 {
		t.Errorf("BIOS boot partition %+v", bp.BIOSBoot)
	}
	p4k := p
	p4k.Sector = 4096
	if p4k.WithBIOSBoot("x").BIOSBoot != nil {
		t.Error("a 4096-byte-sector disk got a BIOS boot partition")
	}
}
