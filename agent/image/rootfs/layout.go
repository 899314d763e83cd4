// Package rootfs installs a root filesystem archive (POSIX tar) onto a whole
// disk. It lays out a fresh GUID Partition Table (UEFI 2.10 §5.3): an EFI
// System Partition formatted FAT32 and a Linux root partition formatted
// ext4, both made with go-diskfs, leaving the disk's last 65 MiB free for
// agent/seed's NoCloud partition (p3), then extracts the archive onto them.
// Entries under boot/efi/ go to the ESP, everything else to the root
// filesystem. It then writes /etc/fstab naming both partitions by
// PARTUUID and, unless the archive ships its own, an anvil boot manifest
// (anvil/boot.json on the ESP) naming the archive's newest kernel with
// root=PARTUUID=..., which agent/bootconfig reads for the kexec.
//
// What an ext4 written by go-diskfs v1.9.4 cannot hold is counted and
// reported, never dropped silently: device nodes and FIFOs are skipped
// (devtmpfs provides /dev), hard links become copies, extended attributes
// (file capabilities, SELinux labels) are not kept, and symbolic links
// take the owner of their directory. Entries the ESP cannot hold (links,
// special files) are skipped and counted the same way.
//
// The partition table and GRUB's BIOS boot code are written last, by the
// commit Prepare returns, after the caller verified the archive: until
// then the disk's first and last MiB are zero, so firmware finds neither
// the ESP nor boot code on a disk whose install was cut.
//
// This file is the pure core: partition layout, routing of archive names,
// and the texts written after extraction.
package rootfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/bootloader"
)

// ErrDiskTooSmall is a target that cannot hold the layout.
var ErrDiskTooSmall = errors.New("disk too small for a root filesystem install")

// Layout is the disk layout a rootfs install creates.
type Layout struct {
	// ESPSize is the EFI System Partition's size in bytes.
	ESPSize int64
	// ESPMount is where the ESP is mounted in the installed system,
	// relative to / (archive entries below it go to the ESP).
	ESPMount string
	// ESPLabel and RootLabel are the filesystem labels.
	ESPLabel, RootLabel string
	// MinRoot is the smallest root partition accepted, in bytes.
	MinRoot int64
	// Reserve is how many bytes at the disk's end stay outside the
	// partitions: the backup GPT and the first-boot seed partition that
	// agent/seed adds as p3. At least 1 MiB.
	Reserve int64
}

// Defaults returns the layout used when fields are zero: a 512 MiB ESP at
// /boot/efi, a root filesystem of at least 256 MiB, and 65 MiB left at the
// disk's end (agent/seed's 64 MiB NoCloud partition and the backup GPT).
func Defaults() Layout {
	return Layout{ESPSize: 512 << 20, ESPMount: "boot/efi", ESPLabel: "ESP", RootLabel: "root", MinRoot: 256 << 20, Reserve: 65 << 20}
}

// withDefaults fills zero fields from Defaults.
func (l Layout) withDefaults() Layout {
	d := Defaults()
	if l.ESPSize == 0 {
		l.ESPSize = d.ESPSize
	}
	if l.ESPMount == "" {
		l.ESPMount = d.ESPMount
	}
	l.ESPMount = strings.Trim(path.Clean("/"+l.ESPMount), "/")
	if l.ESPLabel == "" {
		l.ESPLabel = d.ESPLabel
	}
	if l.RootLabel == "" {
		l.RootLabel = d.RootLabel
	}
	if l.MinRoot == 0 {
		l.MinRoot = d.MinRoot
	}
	if l.Reserve == 0 {
		l.Reserve = d.Reserve
	}
	return l
}

// Part is one planned partition, in logical sectors (End inclusive).
type Part struct {
	Index      int
	Start, End uint64
	// GUID is the partition's unique GUID (PARTUUID), lower case.
	GUID string
}

// Bytes is the partition's size.
func (p Part) Bytes(sector int64) int64 { return int64(p.End-p.Start+1) * sector }

// Plan is the partition table for one disk.
type Plan struct {
	Sector    int64
	ESP, Root Part
	// BIOSBoot, when set, is the BIOS boot partition (p3, in the gap before
	// the ESP) holding GRUB's core image for BIOS firmware.
	BIOSBoot *Part
}

// BIOSBootIndex is the BIOS boot partition's number.
const BIOSBootIndex = 3

// WithBIOSBoot adds the BIOS boot partition to a plan for 512-byte
// sectors (BIOSes boot from those only); other plans stay as they are.
func (p Plan) WithBIOSBoot(guid string) Plan {
	if p.Sector == 512 {
		p.BIOSBoot = &Part{Index: BIOSBootIndex, Start: bootloader.BIOSBootFirst, End: bootloader.BIOSBootLast, GUID: strings.ToLower(guid)}
	}
	return p
}

// align is the partition alignment: 1 MiB, as parted and sfdisk use.
const align = 1 << 20

// PlanDisk lays the partitions out on a disk of size bytes with the given
// logical sector size: the ESP from 1 MiB, the root partition after it up
// to the last whole MiB before the layout's reserve at the disk's end
// (backup GPT and seed partition). guid returns fresh partition GUIDs.
func PlanDisk(size, sector int64, l Layout, guid func() string) (Plan, error) {
	l = l.withDefaults()
	if sector != 512 && sector != 4096 {
		return Plan{}, fmt.Errorf("logical sector size %d: want 512 or 4096", sector)
	}
	if l.ESPSize < 64<<20 || l.ESPSize%align != 0 {
		return Plan{}, fmt.Errorf("ESP size %d: want a multiple of 1 MiB of at least 64 MiB (FAT32's smallest useful size)", l.ESPSize)
	}
	if l.Reserve < align {
		return Plan{}, fmt.Errorf("reserve %d: want at least 1 MiB for the backup GPT", l.Reserve)
	}
	espStart := int64(align)
	rootStart := espStart + l.ESPSize
	// The backup GPT takes the last 33 sectors (512-byte) or 6 (4 KiB);
	// it and the seed partition live in the reserve, aligned down.
	rootEnd := (size-l.Reserve)/align*align - 1
	if rootEnd+1-rootStart < l.MinRoot {
		return Plan{}, fmt.Errorf("%w: %d MiB leave %d MiB for the root filesystem after a %d MiB ESP, want at least %d MiB",
			ErrDiskTooSmall, size>>20, max(rootEnd+1-rootStart, 0)>>20, l.ESPSize>>20, l.MinRoot>>20)
	}
	s := uint64(sector)
	return Plan{
		Sector: sector,
		ESP:    Part{Index: 1, Start: uint64(espStart) / s, End: uint64(rootStart)/s - 1, GUID: strings.ToLower(guid())},
		Root:   Part{Index: 2, Start: uint64(rootStart) / s, End: uint64(rootEnd+1)/s - 1, GUID: strings.ToLower(guid())},
	}, nil
}

// Target says which filesystem an archive entry goes to.
type Target int

// Targets.
const (
	// Skip is the archive's root directory itself.
	Skip Target = iota
	Root
	ESP
)

// Route maps an archive name to its filesystem and the path inside it.
// Names are cleaned as if rooted, so "../x" and "/x" both land at x: an
// archive cannot reach outside the filesystems being built.
func Route(name string, l Layout) (Target, string) {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return Skip, ""
	}
	mount := l.withDefaults().ESPMount
	if p == mount {
		// The mount point itself lives on the root filesystem.
		return Root, p
	}
	if rest, ok := strings.CutPrefix(p, mount+"/"); ok {
		return ESP, rest
	}
	return Root, p
}

// Fstab is the /etc/fstab written for the plan.
func Fstab(p Plan, l Layout) string {
	l = l.withDefaults()
	return fmt.Sprintf(`# /etc/fstab: written by anvil-agent for the disk it installed.
# <file system>                                 <mount point>  <type>  <options>          <dump> <pass>
PARTUUID=%s  /              ext4    errors=remount-ro  0      1
PARTUUID=%s  /%-13s vfat    umask=0077         0      2
`, p.Root.GUID, p.ESP.GUID, l.ESPMount)
}

// Kernel is a kernel found in the archive, with its initrd.
type Kernel struct {
	Version, Path, Initrd string
}

// PickKernel chooses the newest boot/vmlinuz-VERSION among the archive's
// regular files, with boot/initrd.img-VERSION or boot/initramfs-VERSION.img
// when present. ok is false when the archive has no kernel.
func PickKernel(files map[string]bool) (k Kernel, ok bool) {
	var versions []string
	for f := range files {
		if v, found := strings.CutPrefix(f, "boot/vmlinuz-"); found && v != "" && !strings.Contains(v, "/") {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		return k, false
	}
	sort.Strings(versions) // deterministic among versions that compare equal
	sort.SliceStable(versions, func(i, j int) bool { return bootconfig.VersionLess(versions[i], versions[j]) })
	v := versions[len(versions)-1]
	k = Kernel{Version: v, Path: "boot/vmlinuz-" + v}
	for _, ir := range []string{"boot/initrd.img-" + v, "boot/initramfs-" + v + ".img"} {
		if files[ir] {
			k.Initrd = ir
			break
		}
	}
	return k, true
}

// Cmdline is the installed kernel's command line: the planned root
// partition, then args (the machine's console, for instance).
func Cmdline(p Plan, args string) string {
	c := fmt.Sprintf("root=PARTUUID=%s ro rootwait", p.Root.GUID)
	if args = strings.TrimSpace(args); args != "" {
		c += " " + args
	}
	return c
}

// GrubEntries are GRUB's menu entries for a kernel on the root filesystem
// (whose ext4 UUID is the root partition's GUID): first the distribution's
// /vmlinuz link when the archive has it, with /initrd.img when it has that
// too (Debian moves both to the newest kernel on every kernel install, so
// an update boots the new kernel), then the kernel the manifest names,
// GRUB's fallback when the first fails to load.
func GrubEntries(k Kernel, p Plan, cmdline string, vmlinuzLink, initrdLink bool) []bootloader.Entry {
	entry := func(title, kernel, initrd string) bootloader.Entry {
		e := bootloader.Entry{Title: title, FSUUID: p.Root.GUID, Kernel: "/" + kernel, Cmdline: cmdline}
		if initrd != "" {
			e.Initrds = []string{"/" + initrd}
		}
		return e
	}
	var es []bootloader.Entry
	if vmlinuzLink {
		initrd := ""
		if initrdLink {
			initrd = "initrd.img"
		}
		es = append(es, entry("newest kernel (/vmlinuz)", "vmlinuz", initrd))
	}
	return append(es, entry("kernel "+k.Version, k.Path, k.Initrd))
}

// Manifest is the anvil boot manifest (agent/bootconfig reads it) for the
// kernel, booting the planned root partition with args added.
func Manifest(k Kernel, p Plan, args string) ([]byte, error) {
	m := struct {
		Title   string `json:"title"`
		Kernel  string `json:"kernel"`
		Initrd  string `json:"initrd,omitempty"`
		Cmdline string `json:"cmdline"`
	}{
		Title:   "rootfs install, kernel " + k.Version,
		Kernel:  k.Path,
		Initrd:  k.Initrd,
		Cmdline: Cmdline(p, args),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
