package bootloader

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// BIOSBootPartition is the GPT entry of the BIOS boot partition.
func BIOSBootPartition(index int, guid string) *gpt.Partition {
	return &gpt.Partition{Index: index, Start: BIOSBootFirst, End: BIOSBootLast, Size: (BIOSBootLast - BIOSBootFirst + 1) * sector,
		Type: gpt.Type(BIOSBootType), Name: BIOSBootName, GUID: guid}
}

// ReadWriterAt is a disk or disk image.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// InstallBIOS writes core.img into the BIOS boot partition, which parts (the
// disk's GPT entries) must hold at BIOSBootFirst-BIOSBootLast, and then
// boot.img into sector 0, keeping the protective MBR's partition table.
// sectorSize is the disk's logical sector size: BIOSes boot 512-byte
// sectors only, and the partition's place is counted in them. The core
// image goes first and reaches the disk (Sync, when the disk has it)
// before the boot code points at it.
func InstallBIOS(disk ReadWriterAt, f Files, parts []*gpt.Partition, sectorSize int64) error {
	if sectorSize != sector {
		return fmt.Errorf("BIOS boot on a disk with %d-byte sectors: BIOSes boot 512-byte sectors only", sectorSize)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	found := false
	for _, p := range parts {
		if strings.EqualFold(string(p.Type), BIOSBootType) {
			if p.Start != BIOSBootFirst || p.End != BIOSBootLast {
				return fmt.Errorf("BIOS boot partition %d spans sectors %d-%d, want %d-%d", p.Index, p.Start, p.End, BIOSBootFirst, BIOSBootLast)
			}
			found = true
		}
	}
	if !found {
		return errors.New("no BIOS boot partition for GRUB's core image")
	}
	core, err := PatchCore(f.BIOSCore, BIOSBootFirst)
	if err != nil {
		return err
	}
	if _, err := disk.WriteAt(core, BIOSBootFirst*sector); err != nil {
		return fmt.Errorf("write GRUB's core image at sector %d: %w", BIOSBootFirst, err)
	}
	if s, ok := disk.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("sync GRUB's core image: %w", err)
		}
	}
	mbr := make([]byte, sector)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read the MBR: %w", err)
	}
	boot, err := PatchMBR(f.BIOSBoot, mbr, BIOSBootFirst)
	if err != nil {
		return err
	}
	if _, err := disk.WriteAt(boot, 0); err != nil {
		return fmt.Errorf("write GRUB's boot code to the MBR: %w", err)
	}
	return nil
}

// Report says how a written disk can start without the agent's kexec.
type Report struct {
	// UEFI is the UEFI loader found, e.g. `p1:\EFI\BOOT\BOOTX64.EFI`;
	// Removable says it is at the removable-media path (boots with no
	// boot entry).
	UEFI      string
	Removable bool
	// Loader is the UEFI loader's path on the ESP, slash-separated
	// (EFI/BOOT/BOOTX64.EFI), as a boot entry names it.
	Loader string
	// ESP is the EFI System Partition's number and GUID (lower case),
	// where a boot entry points.
	ESP     int
	ESPGUID string
	// ESPStart and ESPSize are its extent in logical sectors.
	ESPStart, ESPSize uint64
	// BIOS says the MBR carries boot code, and BIOSBoot the BIOS boot
	// partition's number when there is one.
	BIOS     bool
	BIOSBoot int
}

// FirmwareBootable reports whether any firmware can boot the disk.
func (r Report) FirmwareBootable() bool { return r.UEFI != "" || r.BIOS }

// String is the summary for install events.
func (r Report) String() string {
	var has, lacks []string
	if r.UEFI != "" {
		has = append(has, "UEFI ("+r.UEFI+")")
	} else {
		lacks = append(lacks, `no UEFI loader (\EFI\BOOT\BOOTX64.EFI or \EFI\*\*.efi on an ESP)`)
	}
	if r.BIOS {
		s := "BIOS (MBR boot code"
		if r.BIOSBoot > 0 {
			s += fmt.Sprintf(", BIOS boot partition p%d", r.BIOSBoot)
		}
		has = append(has, s+")")
	} else {
		lacks = append(lacks, "no BIOS boot code in the MBR")
	}
	if len(has) == 0 {
		return "boots only by kexec: " + strings.Join(lacks, ", ")
	}
	s := "boots from disk on " + strings.Join(has, " and ")
	if len(lacks) > 0 {
		s += "; " + strings.Join(lacks, ", ")
	}
	return s
}

// Inspect reads what a written disk (block device or image file) carries
// to boot without the agent: boot code in the MBR, the BIOS boot
// partition, a UEFI loader on an EFI System Partition.
func Inspect(path string) (Report, error) {
	var r Report
	if err := gptread.CheckFile(path); err != nil {
		return Report{}, err
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return r, fmt.Errorf("open %s: %w", path, err)
	}
	defer d.Close()
	mbr := make([]byte, sector)
	if _, err := d.Backend.ReadAt(mbr, 0); err != nil {
		return r, fmt.Errorf("read the MBR of %s: %w", path, err)
	}
	r.BIOS = !bytes.Equal(mbr[:codeEnd], make([]byte, codeEnd))
	t, err := d.GetPartitionTable()
	if err != nil {
		return r, nil // no partitions: nothing more to find
	}
	gt, ok := t.(*gpt.Table)
	if !ok {
		return r, nil
	}
	for _, p := range gt.Partitions {
		switch {
		case strings.EqualFold(string(p.Type), BIOSBootType):
			r.BIOSBoot = p.Index
		case p.Type == gpt.EFISystemPartition && r.UEFI == "":
			fsys, err := d.GetFilesystem(p.Index)
			if err != nil {
				continue
			}
			loader, removable := findLoader(fsys)
			if loader != "" {
				r.UEFI, r.Loader, r.Removable = fmt.Sprintf(`p%d:\%s`, p.Index, strings.ReplaceAll(loader, "/", `\`)), loader, removable
				r.ESP, r.ESPGUID, r.ESPStart, r.ESPSize = p.Index, strings.ToLower(p.GUID), p.Start, p.End-p.Start+1
			}
		}
	}
	return r, nil
}

// findLoader looks for the removable-media loader, else a vendor's loader
// (\EFI\VENDOR\shimx64.efi, grubx64.efi, ...), on an ESP. FAT is case
// insensitive; go-diskfs matches names as stored, so directories are
// listed and compared without case.
func findLoader(fsys fs.FS) (string, bool) {
	efi := lookupFold(fsys, ".", "EFI")
	if efi == "" {
		return "", false
	}
	if boot := lookupFold(fsys, efi, "BOOT"); boot != "" {
		if l := lookupFold(fsys, boot, "BOOTX64.EFI"); l != "" {
			return l, true
		}
	}
	vendors, _ := fs.ReadDir(fsys, efi)
	for _, v := range vendors {
		if !v.IsDir() || strings.EqualFold(v.Name(), "BOOT") {
			continue
		}
		for _, name := range []string{"shimx64.efi", "grubx64.efi", "systemd-bootx64.efi"} {
			if l := lookupFold(fsys, efi+"/"+v.Name(), name); l != "" {
				return l, false
			}
		}
	}
	return "", false
}

func lookupFold(fsys fs.FS, dir, name string) string {
	es, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return ""
	}
	for _, e := range es {
		if strings.EqualFold(e.Name(), name) {
			if dir == "." {
				return e.Name()
			}
			return dir + "/" + e.Name()
		}
	}
	return ""
}
