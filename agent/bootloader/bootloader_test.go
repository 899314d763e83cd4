package bootloader

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// fakeBoot is a boot.img-shaped sector: code bytes that are not zero, the
// 55 AA signature.
func fakeBoot() []byte {
	b := bytes.Repeat([]byte{0xcc}, sector)
	b[510], b[511] = 0x55, 0xaa
	return b
}

// protectiveMBR is a GPT disk's sector 0: no code, a disk signature, one
// partition entry of type 0xEE.
func protectiveMBR() []byte {
	b := make([]byte, sector)
	copy(b[ntMagic:], []byte{0xde, 0xad, 0xbe, 0xef})
	b[0x1be+4] = 0xee
	binary.LittleEndian.PutUint32(b[0x1be+8:], 1)
	binary.LittleEndian.PutUint32(b[0x1be+12:], 0xffffffff)
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestPatchMBR(t *testing.T) {
	mbr := protectiveMBR()
	copy(mbr[bpbStart:], []byte("BPB!"))
	out, err := PatchMBR(fakeBoot(), mbr, 34)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[ntMagic:partEnd], mbr[ntMagic:partEnd]) {
		t.Error("the disk signature and partition table were not kept")
	}
	if !bytes.Equal(out[bpbStart:bpbEnd], mbr[bpbStart:bpbEnd]) {
		t.Error("the BPB area was not kept")
	}
	if got := binary.LittleEndian.Uint64(out[kernelSector:]); got != 34 {
		t.Errorf("kernel sector %d, want 34", got)
	}
	if out[bootDrive] != 0xff || out[driveCheck] != 0x90 || out[driveCheck+1] != 0x90 {
		t.Errorf("boot drive %#x, drive check % x", out[bootDrive], out[driveCheck:driveCheck+2])
	}
	if out[0] != 0xcc || out[0x1b7] != 0xcc || out[510] != 0x55 || out[511] != 0xaa {
		t.Error("boot code or signature lost")
	}
	if _, err := PatchMBR(fakeBoot(), make([]byte, sector), 34); err == nil {
		t.Error("a sector 0 without 55 AA was accepted")
	}
	if _, err := PatchMBR(fakeBoot()[:100], mbr, 34); err == nil {
		t.Error("a short boot.img was accepted")
	}
}

// fakeCore is a core image of n bytes with grub-mkimage's block list: start
// 2, the length in sectors minus one, segment 0x820.
func fakeCore(n int) []byte {
	b := bytes.Repeat([]byte{0x11}, n)
	first := sector - blocklistSize
	binary.LittleEndian.PutUint64(b[first:], 2)
	binary.LittleEndian.PutUint16(b[first+8:], uint16(sectors(n)-1))
	binary.LittleEndian.PutUint16(b[first+10:], kernelSegment)
	clear(b[first-blocklistSize : first])
	return b
}

func TestPatchCore(t *testing.T) {
	core := fakeCore(10*sector + 7) // 11 sectors
	out, err := PatchCore(core, 34)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 11*sector {
		t.Fatalf("%d bytes, want 11 whole sectors", len(out))
	}
	first := sector - blocklistSize
	start, n, seg := binary.LittleEndian.Uint64(out[first:]), binary.LittleEndian.Uint16(out[first+8:]), binary.LittleEndian.Uint16(out[first+10:])
	if start != 35 || n != 10 || seg != 0x820 {
		t.Errorf("block list start %d len %d segment %#x, want 35 10 0x820", start, n, seg)
	}
	if !bytes.Equal(out[first-blocklistSize:first], make([]byte, blocklistSize)) {
		t.Error("no terminator below the first block list entry")
	}
	if !bytes.Equal(out[sector:10*sector+7], core[sector:]) || !bytes.Equal(out[10*sector+7:], make([]byte, sector-7)) {
		t.Error("the core's body changed or its padding is not zero")
	}
	bad := fakeCore(4 * sector)
	binary.LittleEndian.PutUint16(bad[first+10:], 0)
	if _, err := PatchCore(bad, 34); err == nil || !strings.Contains(err.Error(), "block list") {
		t.Errorf("a core without diskboot's block list: %v", err)
	}
	if _, err := PatchCore(fakeCore(sector), 34); err == nil {
		t.Error("a one-sector core was accepted")
	}
}

func TestConfig(t *testing.T) {
	got, err := Config(
		Entry{Title: "debian (newest kernel)", FSUUID: "0f9a6c0e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", Kernel: "/vmlinuz", Initrds: []string{"/initrd.img"},
			Cmdline: "root=PARTUUID=0f9a6c0e-1d2b-4c3d-8e4f-5a6b7c8d9e0f ro console=ttyS0,115200"},
		Entry{Title: "tiny", Kernel: "/vmlinuz", Cmdline: ""},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := `# anvil: GRUB's configuration for UEFI and BIOS, on the EFI System Partition.
# Written when the disk was laid out; the installed system does not rewrite it.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=0
set default=0
set fallback='1'
menuentry 'debian (newest kernel)' {
	search --no-floppy --fs-uuid --set=root 0f9a6c0e-1d2b-4c3d-8e4f-5a6b7c8d9e0f
	echo 'anvil: loading /vmlinuz'
	linux /vmlinuz root=PARTUUID=0f9a6c0e-1d2b-4c3d-8e4f-5a6b7c8d9e0f ro console=ttyS0,115200
	initrd /initrd.img
}
menuentry tiny {
	echo 'anvil: loading /vmlinuz'
	linux /vmlinuz
}
`
	if got != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}
	// What a kernel command line or a title may hold stays words: quoted,
	// never expanded or run.
	got, err = Config(Entry{Title: "it's $x; reboot", Kernel: "/boot/vmlinuz-6.1 rc", Initrds: []string{"/a b"},
		Cmdline: `dyndbg="file x +p" root=$root a;reboot quiet`})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		`menuentry 'it'\''s $x; reboot' {`,
		`linux '/boot/vmlinuz-6.1 rc' 'dyndbg=file x +p' 'root=$root' 'a;reboot' quiet`,
		`initrd '/a b'`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("config lacks %s:\n%s", w, got)
		}
	}
	for name, e := range map[string]Entry{
		"relative kernel":     {Title: "x", Kernel: "vmlinuz"},
		"line break":          {Title: "x", Kernel: "/k", Cmdline: "a\nlinux /evil"},
		"line break in title": {Title: "x\n}", Kernel: "/k"},
		"brace in uuid":       {Title: "x", Kernel: "/k", FSUUID: "}"},
		"no title":            {Kernel: "/k"},
	} {
		if _, err := Config(e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Config(); err == nil {
		t.Error("a configuration without entries was accepted")
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain-word_1.2/x:y=z,+@%": "plain-word_1.2/x:y=z,+@%",
		"":                         "''",
		"a b":                      "'a b'",
		"$x":                       "'$x'",
		"it's":                     `'it'\''s'`,
		`\`:                        `'\'`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		r    Report
		want string
	}{
		{Report{}, `boots only by kexec: no UEFI loader (\EFI\BOOT\BOOTX64.EFI or \EFI\*\*.efi on an ESP), no BIOS boot code in the MBR`},
		{Report{UEFI: `p1:\EFI\BOOT\BOOTX64.EFI`, Removable: true, BIOS: true, BIOSBoot: 3},
			`boots from disk on UEFI (p1:\EFI\BOOT\BOOTX64.EFI) and BIOS (MBR boot code, BIOS boot partition p3)`},
		{Report{UEFI: `p1:\EFI\debian\shimx64.efi`}, `boots from disk on UEFI (p1:\EFI\debian\shimx64.efi); no BIOS boot code in the MBR`},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v:\n got %s\nwant %s", tc.r, got, tc.want)
		}
		if tc.r.FirmwareBootable() != (tc.r.UEFI != "" || tc.r.BIOS) {
			t.Errorf("%+v: FirmwareBootable", tc.r)
		}
	}
}
