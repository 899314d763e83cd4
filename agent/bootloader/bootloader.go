// Package bootloader makes a disk that anvil lays out boot by itself, under
// UEFI and under BIOS firmware, with GRUB 2 (Debian's builds, made into
// images by package mkgrub when an image or the agent's initramfs is
// built):
//
//   - UEFI: GRUB as \EFI\BOOT\BOOTX64.EFI on the EFI System Partition, the
//     removable-media path every UEFI firmware tries on a disk (UEFI 2.10
//     §3.5.1.1), so the disk boots with or without a boot entry;
//   - BIOS: GRUB's boot.img as the protective MBR's boot code (the
//     partition table kept), loading core.img from a BIOS boot partition
//     (GPT type 21686148-6449-6E6F-744E-656564454649) in the gap between
//     the GPT and the first MiB, with the block list in core.img's first
//     sector pointing at the rest, as grub-bios-setup writes them;
//   - both images carry the prefix (,gpt1)/grub — partition 1 of the disk
//     the firmware booted — and read one configuration there: grub/grub.cfg
//     on the ESP, which anvil writes (Config).
//
// The ESP must be partition 1; every disk anvil lays out has it there (the
// tiny image, rootfs installs and the images made from them). A disk with
// 4096-byte logical sectors gets the UEFI loader only: BIOSes boot from
// 512-byte sectors.
//
// This file is the pure core: the layout, the patching of boot.img and
// core.img, the configuration. disk.go writes to and reads from disks.
package bootloader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/anvil-metal/anvil/agent/bootparams"
)

// The layout GRUB's images are built for.
const (
	// ESPIndex is the ESP's partition number; the images' prefix names it.
	ESPIndex = 1
	// Prefix is where the images look for their configuration.
	Prefix = "(,gpt1)/grub"
	// ConfigPath is the configuration on the ESP.
	ConfigPath = "grub/grub.cfg"
	// EFIPath is the UEFI removable-media loader path for x86-64.
	EFIPath = "EFI/BOOT/BOOTX64.EFI"
	// BIOSBootName is the BIOS boot partition's GPT name.
	BIOSBootName = "BIOS boot"
	// BIOSBootType is the BIOS boot partition's GPT type GUID.
	BIOSBootType = "21686148-6449-6E6F-744E-656564454649"
	// BIOSBootFirst and BIOSBootLast bound the BIOS boot partition in
	// 512-byte sectors: the first sector after a GPT of 128 entries, up to
	// the 1 MiB where the first aligned partition starts.
	BIOSBootFirst, BIOSBootLast = 34, 2047
	sector                      = 512
)

// Files are GRUB's images.
type Files struct {
	// EFI is the x86_64-efi image (BOOTX64.EFI).
	EFI []byte
	// BIOSBoot is i386-pc boot.img (one sector), BIOSCore core.img.
	BIOSBoot, BIOSCore []byte
	// Version is GRUB's version, for reports.
	Version string
}

// File names in a directory of images (mkgrub writes them, the agent's
// initramfs carries them in Dir).
const (
	EFIFile     = "bootx64.efi"
	BootFile    = "boot.img"
	CoreFile    = "core.img"
	VersionFile = "VERSION"
	// Dir is where the agent's initramfs keeps the images.
	Dir = "/lib/anvil/grub"
)

// ErrNoFiles is a directory without GRUB's images.
var ErrNoFiles = errors.New("no GRUB images")

// LoadFiles reads the images from dir.
func LoadFiles(dir string) (Files, error) {
	var f Files
	for _, x := range []struct {
		name string
		dst  *[]byte
	}{{EFIFile, &f.EFI}, {BootFile, &f.BIOSBoot}, {CoreFile, &f.BIOSCore}} {
		b, err := os.ReadFile(filepath.Join(dir, x.name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return Files{}, fmt.Errorf("%w in %s: %v", ErrNoFiles, dir, err)
			}
			return Files{}, fmt.Errorf("GRUB image: %w", err)
		}
		*x.dst = b
	}
	v, err := os.ReadFile(filepath.Join(dir, VersionFile))
	if err != nil {
		return Files{}, fmt.Errorf("GRUB version: %w", err)
	}
	f.Version = strings.TrimSpace(string(v))
	return f, f.Validate()
}

// Validate checks the images' shapes: a PE image, a boot sector, a core
// image with room for its block list that fits the BIOS boot partition.
func (f Files) Validate() error {
	var errs []error
	if len(f.EFI) < 64 || string(f.EFI[:2]) != "MZ" {
		errs = append(errs, errors.New("the EFI image is not a PE executable (no MZ)"))
	}
	if len(f.BIOSBoot) != sector || f.BIOSBoot[510] != 0x55 || f.BIOSBoot[511] != 0xaa {
		errs = append(errs, fmt.Errorf("boot.img: want one sector ending 55 AA, have %d bytes", len(f.BIOSBoot)))
	}
	if n := sectors(len(f.BIOSCore)); n < 2 || n > BIOSBootLast-BIOSBootFirst+1 {
		errs = append(errs, fmt.Errorf("core.img of %d bytes: want 2 to %d sectors (the BIOS boot partition)", len(f.BIOSCore), BIOSBootLast-BIOSBootFirst+1))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("GRUB images: %w", err)
	}
	return nil
}

func sectors(n int) int { return (n + sector - 1) / sector }

// boot.img's fields (GRUB include/grub/i386/pc/boot.h).
const (
	bpbStart      = 0x03  // GRUB_BOOT_MACHINE_BPB_START
	bpbEnd        = 0x5a  // GRUB_BOOT_MACHINE_BPB_END
	kernelSector  = 0x5c  // GRUB_BOOT_MACHINE_KERNEL_SECTOR: LBA of core.img, 8 bytes LE
	bootDrive     = 0x64  // GRUB_BOOT_MACHINE_BOOT_DRIVE: 0xff = the drive the BIOS booted
	driveCheck    = 0x66  // GRUB_BOOT_MACHINE_DRIVE_CHECK: a jmp, NOPed for hard disks
	ntMagic       = 0x1b8 // GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC: disk signature, then the partition table
	partEnd       = 0x1fe // GRUB_BOOT_MACHINE_PART_END
	codeEnd       = ntMagic
	blocklistSize = 12     // struct grub_boot_blocklist {u64 start; u16 len; u16 segment}
	kernelSegment = 0x0820 // GRUB_BOOT_I386_PC_KERNEL_SEG + 512>>4: where the second sector loads
)

// PatchMBR returns the sector 0 that boots core.img at coreLBA: boot.img's
// code with the disk's own BPB area, disk signature and partition table
// (the protective MBR's) kept from mbr, the core image's sector, "the drive
// the BIOS booted from", and the drive check NOPed as grub-bios-setup does
// for hard disks (BIOSes that pass a wrong drive number).
func PatchMBR(bootImg, mbr []byte, coreLBA uint64) ([]byte, error) {
	if len(bootImg) != sector || len(mbr) != sector {
		return nil, fmt.Errorf("boot.img and the MBR must be one sector each (%d, %d bytes)", len(bootImg), len(mbr))
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, errors.New("the disk's sector 0 is no MBR (no 55 AA): a GPT disk has a protective MBR")
	}
	out := bytes.Clone(bootImg)
	copy(out[bpbStart:bpbEnd], mbr[bpbStart:bpbEnd])
	copy(out[ntMagic:partEnd], mbr[ntMagic:partEnd])
	out[510], out[511] = 0x55, 0xaa
	binary.LittleEndian.PutUint64(out[kernelSector:], coreLBA)
	out[bootDrive] = 0xff
	out[driveCheck], out[driveCheck+1] = 0x90, 0x90
	return out, nil
}

// PatchCore returns core.img padded to whole sectors, its first block list
// entry (the last 12 bytes of its first sector, diskboot.img's) naming the
// sectors after coreLBA that hold the rest, loaded from segment 0x820, and
// the entry below it the terminator. The images are written contiguously,
// so one entry covers them.
func PatchCore(core []byte, coreLBA uint64) ([]byte, error) {
	n := sectors(len(core))
	if n < 2 || n-1 > 0xffff {
		return nil, fmt.Errorf("core.img of %d bytes: want 2 to 65536 sectors", len(core))
	}
	out := make([]byte, n*sector)
	copy(out, core)
	first := sector - blocklistSize
	// grub-mkimage leaves its own entry there (start 2, the core's length
	// in sectors minus one, segment 0x820): check the slot is one.
	if seg := binary.LittleEndian.Uint16(out[first+10:]); seg != kernelSegment {
		return nil, fmt.Errorf("core.img has no block list where diskboot.img keeps it (segment %#x, want %#x): not an i386-pc core image", seg, kernelSegment)
	}
	binary.LittleEndian.PutUint64(out[first:], coreLBA+1)
	binary.LittleEndian.PutUint16(out[first+8:], uint16(n-1))
	binary.LittleEndian.PutUint16(out[first+10:], kernelSegment)
	clear(out[first-blocklistSize : first])
	return out, nil
}

// Entry is one menu entry of the configuration.
type Entry struct {
	Title string
	// FSUUID is the UUID of the filesystem holding the kernel (GRUB's
	// search --fs-uuid); empty is the ESP itself.
	FSUUID  string
	Kernel  string
	Initrds []string
	Cmdline string
}

// Config renders grub/grub.cfg: both the serial port and the screen as
// terminals, the entries in order, the first booted at once and the next
// ones as fallbacks when it fails to load. No menu countdown: GRUB's EFI
// timer was seen to stall under emulation (TCG on a loaded host) with the
// countdown stuck at "1s", and a server has no one at its console to pick
// an entry. Every word is quoted for GRUB's script parser (Quote), so a
// title, path or kernel argument cannot run a command.
func Config(entries ...Entry) (string, error) {
	if len(entries) == 0 {
		return "", errors.New("a boot configuration needs an entry")
	}
	var b strings.Builder
	b.WriteString(`# anvil: GRUB's configuration for UEFI and BIOS, on the EFI System Partition.
# Written when the disk was laid out; the installed system does not rewrite it.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=0
set default=0
`)
	if len(entries) > 1 {
		var fb []string
		for i := 1; i < len(entries); i++ {
			fb = append(fb, fmt.Sprint(i))
		}
		fmt.Fprintf(&b, "set fallback='%s'\n", strings.Join(fb, " "))
	}
	for i, e := range entries {
		if err := e.validate(); err != nil {
			return "", fmt.Errorf("boot entry %d: %w", i, err)
		}
		fmt.Fprintf(&b, "menuentry %s {\n", Quote(e.Title))
		if e.FSUUID != "" {
			fmt.Fprintf(&b, "\tsearch --no-floppy --fs-uuid --set=root %s\n", e.FSUUID)
		}
		fmt.Fprintf(&b, "\techo %s\n", Quote("anvil: loading "+e.Kernel))
		b.WriteString("\tlinux " + Quote(e.Kernel))
		for _, arg := range bootparams.Split(e.Cmdline) {
			b.WriteString(" " + Quote(arg))
		}
		b.WriteString("\n")
		if len(e.Initrds) > 0 {
			b.WriteString("\tinitrd")
			for _, ir := range e.Initrds {
				b.WriteString(" " + Quote(ir))
			}
			b.WriteString("\n")
		}
		b.WriteString("}\n")
	}
	return b.String(), nil
}

// Quote makes s one word of GRUB's script language with no expansion: as
// it is when it holds only characters GRUB gives no meaning to, else in
// single quotes, an embedded quote written as '\”. A kernel argument with
// spaces (foo="a b", split by the kernel's rules) reaches the kernel as
// "foo=a b", which the kernel reads the same way.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._,:=+@%-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// uuidChars are a filesystem UUID's (hex digits and dashes).
const uuidChars = "0123456789abcdefABCDEF-"

func (e Entry) validate() error {
	var errs []error
	all := append([]string{e.Title, e.Kernel, e.Cmdline}, e.Initrds...)
	for _, v := range all {
		if strings.ContainsAny(v, "\n\r\x00") {
			errs = append(errs, fmt.Errorf("%q spans lines", v))
		}
	}
	if e.Title == "" {
		errs = append(errs, errors.New("an entry needs a title"))
	}
	for _, p := range append([]string{e.Kernel}, e.Initrds...) {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("path %q: want an absolute path", p))
		}
	}
	if e.FSUUID != "" && strings.Trim(e.FSUUID, uuidChars) != "" {
		errs = append(errs, fmt.Errorf("filesystem UUID %q: want hex digits and dashes", e.FSUUID))
	}
	return errors.Join(errs...)
}

// ESPFiles are the files that go onto the ESP, by path: the UEFI loader
// and the configuration.
func ESPFiles(f Files, cfg string) map[string][]byte {
	return map[string][]byte{EFIPath: f.EFI, ConfigPath: []byte(cfg)}
}
