package rootfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/anvil-metal/anvil/agent/blockdev"
	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/image/fatfs"
)

// Options configure an install.
type Options struct {
	Layout Layout
	// Bootloader, when set, makes the disk boot by itself: GRUB for UEFI
	// and BIOS (package bootloader), a BIOS boot partition, and GRUB's
	// configuration for the archive's kernel. Without it the disk boots
	// only by the agent's kexec.
	Bootloader *bootloader.Files
	// KernelArgs are added to the installed kernel's command line in the
	// manifest and GRUB's configuration (the machine's console=).
	KernelArgs string
	// GUID returns fresh GUIDs (default: random version 4 UUIDs); a test
	// seam for reproducible layouts.
	GUID func() string

	// commitSynced, when set (tests), runs after each synced step of the
	// commit (0: entries, BIOS boot code and backup; 1: primary header;
	// 2: sector 0).
	commitSynced func(step int)
}

// Result says what Install did.
type Result struct {
	Plan   Plan
	Counts Counts
	// Kernel is the kernel the manifest names (empty Path: none written).
	Kernel Kernel
	// OwnManifest says the archive brought its own anvil/boot.json.
	OwnManifest bool
	// FstabKept is where the archive's own /etc/fstab was kept, if any.
	FstabKept string
	// Boot says how the disk boots without the agent: GRUB installed, or
	// why not.
	Boot string
	// Written and Skipped bytes on the medium (skipped: zero writes onto
	// a zeroed target).
	Written, Skipped int64
	Duration         time.Duration
}

// String is the one-line summary for the install event.
func (r Result) String() string {
	s := fmt.Sprintf("GPT: p1 ESP %d MiB FAT32 PARTUUID=%s, p2 root %d MiB ext4 PARTUUID=%s; %s",
		r.Plan.ESP.Bytes(r.Plan.Sector)>>20, r.Plan.ESP.GUID, r.Plan.Root.Bytes(r.Plan.Sector)>>20, r.Plan.Root.GUID, r.Counts)
	switch {
	case r.OwnManifest:
		s += "; the archive's anvil/boot.json kept"
	case r.Kernel.Path != "":
		s += "; manifest names kernel " + r.Kernel.Path
	default:
		s += "; no boot/vmlinuz-* in the archive, no manifest written"
	}
	if r.FstabKept != "" {
		s += "; the archive's fstab kept as /" + r.FstabKept
	}
	if r.Boot != "" {
		s += "; " + r.Boot
	}
	if r.Skipped > 0 {
		s += fmt.Sprintf("; %d MiB of zero writes skipped on the erased disk", r.Skipped>>20)
	}
	return s
}

// Install partitions target (a whole disk, or an image file), makes the
// filesystems and extracts the archive r onto them. zeroed says the target
// reads as zeroes, so zero writes to untouched regions are skipped. args
// are this install's extra kernel arguments: GRUB's configuration carries
// them (every boot from disk), the manifest does not (the kexec adds them
// itself). It is Prepare followed at once by its commit, for callers that
// verified the archive beforehand. On error the target is left as it is;
// the caller destroys the partition tables (agent/image does).
func Install(ctx context.Context, target string, zeroed bool, r io.Reader, args string, o Options) (Result, error) {
	res, commit, err := Prepare(ctx, target, zeroed, r, args, o)
	if err != nil {
		return res, err
	}
	return res, commit()
}

// Prepare does Install's work except what firmware reads first: it zeroes
// the target's first and last MiB (an earlier install's MBR and both
// GPTs) and syncs, makes the filesystems, extracts the archive and writes
// the boot files onto the ESP, and syncs again. The returned commit writes
// the partition table (protective MBR, primary and backup GPT) and GRUB's
// BIOS boot code, syncs and makes the kernel re-read the table; the
// caller calls it only once the archive verified. Until then the disk has
// no partition table: firmware finds neither the ESP nor boot code, and a
// crash or power cut at any point leaves it unbootable.
func Prepare(ctx context.Context, target string, zeroed bool, r io.Reader, args string, o Options) (res Result, commit func() error, err error) {
	start := time.Now()
	dev, err := blockdev.OpenBuffered(target, os.O_RDWR)
	if err != nil {
		return res, nil, err
	}
	defer func() {
		if cerr := dev.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", target, cerr)
		}
	}()
	if res.Plan, err = PlanDisk(dev.Size, dev.LogicalBlock, o.Layout, o.guid); err != nil {
		return res, nil, fmt.Errorf("%s: %w", target, err)
	}
	if o.Bootloader != nil {
		res.Plan = res.Plan.WithBIOSBoot(o.guid())
	}
	if err := invalidate(dev); err != nil {
		return res, nil, err
	}
	var store backend.Storage = file.New(dev.File, false)
	var zs *zeroSkipping
	if zeroed {
		if zs, err = newZeroSkipping(store, dev.Size); err != nil {
			return res, nil, err
		}
		store = zs
	}
	table, bios, err := build(ctx, store, r, args, &res, o)
	if err != nil {
		return res, nil, fmt.Errorf("rootfs on %s: %w", target, err)
	}
	if err := dev.Sync(); err != nil {
		return res, nil, err
	}
	if zs != nil {
		res.Written, res.Skipped = zs.Stats()
	}
	size := dev.Size
	commit = func() error {
		if err := writeTable(target, size, table, bios, o); err != nil {
			return fmt.Errorf("rootfs on %s: %w", target, err)
		}
		return nil
	}
	res.Duration = time.Since(start)
	return res, commit, nil
}

// invalidate zeroes the device's first and last MiB (the regions a
// partition table lives in) and syncs.
func invalidate(dev *blockdev.Device) error {
	zero := make([]byte, 1<<20)
	head := min(int64(len(zero)), dev.Size)
	tail := max(dev.Size-int64(len(zero)), head)
	for _, r := range [][2]int64{{0, head}, {tail, dev.Size}} {
		if r[1] <= r[0] {
			continue
		}
		if _, err := dev.WriteAt(zero[:r[1]-r[0]], r[0]); err != nil {
			return fmt.Errorf("invalidate the partition tables on %s: zero [%d,%d): %w", dev.Path, r[0], r[1], err)
		}
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("invalidate the partition tables on %s: %w", dev.Path, err)
	}
	return nil
}

// writeTable is the commit. The GPT (protective MBR, primary and backup)
// and, when bios is set, GRUB's MBR boot code and core image are composed
// in a sparse scratch file first, then copied to the disk in three synced
// steps, so that a power cut leaves no table or the whole one, never half
// (a reader would take half a table for an unreadable, protected disk, and
// a BIOS would take a signed MBR without boot code for a bootable one):
// (1) the primary entries, the BIOS boot partition and the backup GPT;
// (2) the primary header; (3) sector 0 (protective MBR and boot code).
func writeTable(target string, size int64, table *gpt.Table, bios bool, o Options) (err error) {
	dev, err := blockdev.OpenBuffered(target, os.O_RDWR)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dev.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", target, cerr)
		}
	}()
	scratch, err := os.CreateTemp("", "anvil-table-*")
	if err != nil {
		return fmt.Errorf("scratch file for the partition table: %w", err)
	}
	defer func() {
		scratch.Close()
		os.Remove(scratch.Name())
	}()
	if err := scratch.Truncate(size); err != nil {
		return fmt.Errorf("scratch file for the partition table: %w", err)
	}
	if err := table.Write(scratch, size); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	if bios {
		// Sector 0 and the BIOS boot partition: outside every filesystem.
		if err := bootloader.InstallBIOS(scratch, *o.Bootloader, table.Partitions, int64(table.LogicalSectorSize)); err != nil {
			return err
		}
	}
	steps, err := commitSteps(scratch, size, table)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i, ranges := range steps {
		for _, r := range ranges {
			for off := r[0]; off < r[1]; {
				n := min(int64(len(buf)), r[1]-off)
				if _, err := scratch.ReadAt(buf[:n], off); err != nil {
					return fmt.Errorf("read scratch partition table [%d,%d): %w", off, off+n, err)
				}
				if _, err := dev.WriteAt(buf[:n], off); err != nil {
					return fmt.Errorf("write %s [%d,%d): %w", target, off, off+n, err)
				}
				off += n
			}
		}
		if err := dev.Sync(); err != nil {
			return err
		}
		if o.commitSynced != nil {
			o.commitSynced(i)
		}
	}
	return dev.RereadPartitions()
}

// commitSteps are the byte ranges of the three commit steps, from the
// composed table: the primary entries up to the first data partition (the
// BIOS boot partition lies there) and the backup entries and header; the
// primary header; sector 0.
func commitSteps(scratch io.ReaderAt, size int64, table *gpt.Table) ([3][][2]int64, error) {
	lbs := int64(table.LogicalSectorSize)
	headEnd := size
	for _, p := range table.Partitions {
		if p != nil && !strings.EqualFold(string(p.Type), bootloader.BIOSBootType) {
			headEnd = min(headEnd, int64(p.Start)*lbs)
		}
	}
	hdr := make([]byte, 92)
	if _, err := scratch.ReadAt(hdr, lbs); err != nil || string(hdr[:8]) != "EFI PART" {
		return [3][][2]int64{}, fmt.Errorf("composed GPT has no primary header: %v", err)
	}
	backupLBA := int64(binary.LittleEndian.Uint64(hdr[32:40]))
	if _, err := scratch.ReadAt(hdr, backupLBA*lbs); err != nil || string(hdr[:8]) != "EFI PART" {
		return [3][][2]int64{}, fmt.Errorf("composed GPT has no backup header at LBA %d: %v", backupLBA, err)
	}
	backupEntries := int64(binary.LittleEndian.Uint64(hdr[72:80]))
	if headEnd <= 2*lbs || backupEntries <= 0 || backupEntries > backupLBA || (backupLBA+1)*lbs > size {
		return [3][][2]int64{}, fmt.Errorf("composed GPT: head ends at %d, backup entries at LBA %d, header at %d, disk %d bytes", headEnd, backupEntries, backupLBA, size)
	}
	return [3][][2]int64{
		{{2 * lbs, headEnd}, {backupEntries * lbs, (backupLBA + 1) * lbs}},
		{{lbs, 2 * lbs}},
		{{0, lbs}},
	}, nil
}

func (o Options) guid() string {
	if o.GUID != nil {
		return o.GUID()
	}
	return uuid.NewString()
}

// build makes the filesystems, extracts the archive and adds fstab, the
// ESP mount point, the boot manifest and GRUB's files on the ESP. It
// returns the partition table for the commit to write, and whether GRUB's
// BIOS part is to be written with it (outside the filesystems).
func build(ctx context.Context, store backend.Storage, r io.Reader, args string, res *Result, o Options) (*gpt.Table, bool, error) {
	p := res.Plan
	l := o.Layout.withDefaults()
	table := &gpt.Table{
		LogicalSectorSize: int(p.Sector), PhysicalSectorSize: int(p.Sector), ProtectiveMBR: true,
		GUID: o.guid(),
		Partitions: []*gpt.Partition{
			{Index: 1, Start: p.ESP.Start, End: p.ESP.End, Type: gpt.EFISystemPartition, Name: "EFI System Partition", GUID: p.ESP.GUID},
			{Index: 2, Start: p.Root.Start, End: p.Root.End, Type: gpt.LinuxFilesystem, Name: l.RootLabel, GUID: p.Root.GUID},
		},
	}
	if p.BIOSBoot != nil {
		table.Partitions = append(table.Partitions, bootloader.BIOSBootPartition(p.BIOSBoot.Index, p.BIOSBoot.GUID))
	}
	esp, err := fatfs.Create(store, p.ESP.Bytes(p.Sector), int64(p.ESP.Start)*p.Sector, p.Sector, l.ESPLabel, false)
	if err != nil {
		return nil, false, fmt.Errorf("make FAT32 on p1: %w", err)
	}
	rootUUID, err := uuid.Parse(p.Root.GUID)
	if err != nil {
		return nil, false, fmt.Errorf("root partition GUID %q: %w", p.Root.GUID, err)
	}
	root, err := ext4.Create(store, p.Root.Bytes(p.Sector), int64(p.Root.Start)*p.Sector, 512, &ext4.Params{UUID: &rootUUID, VolumeName: l.RootLabel})
	if err != nil {
		return nil, false, fmt.Errorf("make ext4 on p2: %w", err)
	}
	x := newExtractor(l, root, esp)
	if err := x.extract(ctx, r); err != nil {
		return nil, false, err
	}
	res.Counts = x.counts
	bios, err := finish(x, p, l, res, args, o)
	if err != nil {
		return nil, false, err
	}
	return table, bios, nil
}

// finish adds what the installed system needs from the layout: the ESP's
// mount point, an fstab naming the partitions, the boot manifest, and
// GRUB's loader and configuration on the ESP. It reports whether GRUB's
// BIOS part is to be written.
func finish(x *extractor, p Plan, l Layout, res *Result, args string, o Options) (bool, error) {
	if err := x.mkdirAll(x.root, x.made[0], l.ESPMount); err != nil {
		return false, fmt.Errorf("ESP mount point: %w", err)
	}
	if x.fstabKept {
		res.FstabKept = fstabKept
	}
	if err := x.writeText(Root, fstab, []byte(Fstab(p, l))); err != nil {
		return false, err
	}
	res.OwnManifest = x.hasManifest
	if x.hasManifest {
		res.Boot = "no boot loader installed: the archive brings its own boot manifest"
		return false, nil
	}
	k, ok := PickKernel(x.regularFiles())
	if !ok {
		res.Boot = "no boot loader installed: no kernel"
		return false, nil
	}
	m, err := Manifest(k, p, o.KernelArgs)
	if err != nil {
		return false, err
	}
	if err := x.writeText(ESP, "anvil/boot.json", m); err != nil {
		return false, err
	}
	res.Kernel = k
	if o.Bootloader == nil {
		res.Boot = "no boot loader installed (none given to the installer): the disk boots only by kexec"
		return false, nil
	}
	for _, f := range []string{bootloader.EFIPath, bootloader.ConfigPath} {
		if _, taken := x.made[1][f]; taken {
			res.Boot = fmt.Sprintf("anvil's GRUB not installed: the archive brings its own /%s/%s", l.ESPMount, f)
			return false, nil
		}
	}
	_, vmlinuz := x.made[0]["vmlinuz"]
	_, initrd := x.made[0]["initrd.img"]
	cfg, err := bootloader.Config(GrubEntries(k, p, Cmdline(p, strings.TrimSpace(o.KernelArgs+" "+args)), vmlinuz, initrd)...)
	if err != nil {
		return false, err
	}
	for name, b := range bootloader.ESPFiles(*o.Bootloader, cfg) {
		if err := x.writeText(ESP, name, b); err != nil {
			return false, err
		}
	}
	res.Boot = fmt.Sprintf("GRUB %s for UEFI (\\%s)", o.Bootloader.Version, strings.ReplaceAll(bootloader.EFIPath, "/", "\\"))
	if p.BIOSBoot != nil {
		res.Boot += fmt.Sprintf(" and BIOS (MBR, BIOS boot partition p%d)", p.BIOSBoot.Index)
	}
	return p.BIOSBoot != nil, nil
}

// Installer adapts Prepare to agent/image's TarInstaller: agent/image
// calls the commit once the archive's digest matched.
func Installer(o Options) func(ctx context.Context, target string, zeroed bool, r io.Reader, args string) (string, func() error, error) {
	return func(ctx context.Context, target string, zeroed bool, r io.Reader, args string) (string, func() error, error) {
		res, commit, err := Prepare(ctx, target, zeroed, r, args, o)
		if err != nil {
			return "", nil, err
		}
		return res.String(), commit, nil
	}
}
