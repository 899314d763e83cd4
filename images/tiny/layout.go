package tiny

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/images/internal/diskimg"
	"github.com/anvil-metal/anvil/images/internal/ext4norm"
)

// The image's layout: 64 MiB, 512-byte sectors, partitions 1 MiB aligned.
const (
	Sector    = 512
	ImageSize = 64 << 20
	// ESP is partition 1, from 1 MiB, 40 MiB of FAT32 (the smallest
	// FAT32 is 33 MiB); Root is partition 2, ext4, up to the last MiB,
	// which holds the backup GPT.
	ESPStart, ESPSize   = 1 << 20, 40 << 20
	RootStart, RootSize = ESPStart + ESPSize, ImageSize - RootStart - 1<<20

	ESPLabel  = "ANVIL-TINY"
	RootLabel = "tiny-root"

	// BIOSBootIndex is the BIOS boot partition's number: GRUB's core image
	// for BIOS firmware, in the gap before the ESP (package bootloader).
	BIOSBootIndex = 3

	// Paths on the ESP (GRUB's, bootloader.EFIPath and ConfigPath, too).
	KernelPath   = "vmlinuz"
	InitrdPath   = "initrd.img"
	ManifestPath = "anvil/boot.json"
	// OSReleasePath is on the root filesystem (os-release(5)).
	OSReleasePath = "etc/os-release"
)

// Cmdline is the installed kernel's command line: the serial console the
// lab and the tests read, and no reboot loop on a panic (panic=-1 reboots
// at once, which QEMU's -no-reboot turns into an exit).
const Cmdline = "console=ttyS0,115200 panic=-1"

// GUIDs are name-based (RFC 9562 version 5 in the URL namespace), so the
// same inputs give the same bytes. Every installed copy shares them, as
// copies of a cloud image do.
func guid(what string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/anvil-metal/anvil/images/tiny#"+what)).String()
}

// RootPartUUID is the root partition's PARTUUID.
func RootPartUUID() string { return guid("root") }

// Inputs are everything an image's bytes depend on.
type Inputs struct {
	// Kernel is the bzImage, Initrd the compressed initramfs.
	Kernel, Initrd []byte
	// KernelRelease is the kernel's uname -r.
	KernelRelease string
	// Version is the image's version (os-release VERSION_ID).
	Version string
	// Epoch is the timestamp of the files the builder writes
	// (SOURCE_DATE_EPOCH).
	Epoch time.Time
	// Bootloader is GRUB for UEFI and BIOS (package mkgrub builds it).
	Bootloader bootloader.Files
}

// Manifest is the anvil boot manifest agent/bootconfig reads.
type Manifest struct {
	Title   string `json:"title"`
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd"`
	Cmdline string `json:"cmdline"`
}

// ManifestJSON renders the manifest for in.
func ManifestJSON(in Inputs) ([]byte, error) {
	b, err := json.MarshalIndent(Manifest{
		Title:   fmt.Sprintf("anvil-tiny %s (kernel %s)", in.Version, in.KernelRelease),
		Kernel:  KernelPath,
		Initrd:  InitrdPath,
		Cmdline: Cmdline,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode boot manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// GrubConfig is GRUB's configuration: the kernel and initrd on the ESP
// with the image's command line, for UEFI and BIOS alike.
func GrubConfig(in Inputs) (string, error) {
	return bootloader.Config(bootloader.Entry{
		Title:  fmt.Sprintf("anvil-tiny %s (kernel %s)", in.Version, in.KernelRelease),
		Kernel: "/" + KernelPath, Initrds: []string{"/" + InitrdPath}, Cmdline: Cmdline,
	})
}

// OSRelease renders etc/os-release (os-release(5)).
func OSRelease(in Inputs) string {
	return fmt.Sprintf(`NAME="anvil tiny"
ID=anvil-tiny
VERSION_ID=%s
PRETTY_NAME="anvil tiny %s (CI image, kernel %s)"
HOME_URL="https://github.com/anvil-metal/anvil"
`, in.Version, in.Version, in.KernelRelease)
}

// Validate reports every problem of in.
func (in Inputs) Validate() error {
	var errs []string
	if len(in.Kernel) < 0x206 || string(in.Kernel[0x202:0x206]) != "HdrS" {
		errs = append(errs, "kernel is not a bzImage (no HdrS at 0x202)")
	}
	if len(in.Initrd) == 0 {
		errs = append(errs, "initrd is empty")
	}
	if err := in.Bootloader.Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	if in.KernelRelease == "" || strings.ContainsAny(in.KernelRelease, " \t\n\"") {
		errs = append(errs, fmt.Sprintf("kernel release %q: want a non-empty word", in.KernelRelease))
	}
	if in.Version == "" || strings.ContainsAny(in.Version, " \t\n\"'") {
		errs = append(errs, fmt.Sprintf("version %q: want a non-empty word without quotes", in.Version))
	}
	if n := len(in.Kernel) + len(in.Initrd) + len(in.Bootloader.EFI); n > ESPSize-2<<20 {
		errs = append(errs, fmt.Sprintf("kernel, initrd and GRUB are %d bytes, the %d MiB ESP holds at most %d", n, ESPSize>>20, ESPSize-2<<20))
	}
	if len(errs) > 0 {
		return fmt.Errorf("tiny image inputs: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Assemble writes the raw image for in to path (created or truncated; a
// sparse file: the free space is never written): the GPT, the ESP with the
// kernel, the initrd, the manifest, GRUB for UEFI and its configuration,
// GRUB's BIOS boot code and core image, and the root filesystem with
// etc/os-release.
func Assemble(path string, in Inputs) (err error) {
	if err := in.Validate(); err != nil {
		return err
	}
	manifest, err := ManifestJSON(in)
	if err != nil {
		return err
	}
	grubCfg, err := GrubConfig(in)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
	}()
	if err := f.Truncate(ImageSize); err != nil {
		return fmt.Errorf("size %s: %w", path, err)
	}
	store := file.New(f, false)
	table := &gpt.Table{
		LogicalSectorSize: Sector, PhysicalSectorSize: Sector, ProtectiveMBR: true, GUID: guid("disk"),
		Partitions: []*gpt.Partition{
			{Index: 1, Start: ESPStart / Sector, End: (ESPStart+ESPSize)/Sector - 1, Size: ESPSize,
				Type: gpt.EFISystemPartition, Name: "EFI System Partition", GUID: guid("esp")},
			{Index: 2, Start: RootStart / Sector, End: (RootStart+RootSize)/Sector - 1, Size: RootSize,
				Type: gpt.LinuxFilesystem, Name: RootLabel, GUID: RootPartUUID()},
			bootloader.BIOSBootPartition(BIOSBootIndex, guid("bios-boot")),
		},
	}
	w, err := store.Writable()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := table.Write(w, ImageSize); err != nil {
		return fmt.Errorf("write the GPT of %s: %w", path, err)
	}

	esp, err := diskimg.MakeFAT32(store, ESPSize, ESPStart, Sector, ESPLabel, true)
	if err != nil {
		return fmt.Errorf("ESP of %s: %w", path, err)
	}
	files := []struct {
		name string
		b    []byte
	}{{KernelPath, in.Kernel}, {InitrdPath, in.Initrd}, {ManifestPath, manifest},
		{bootloader.EFIPath, in.Bootloader.EFI}, {bootloader.ConfigPath, []byte(grubCfg)}}
	for _, fl := range files {
		if err := diskimg.WriteFile(esp, fl.name, fl.b); err != nil {
			return fmt.Errorf("ESP of %s: %w", path, err)
		}
	}

	// go-diskfs stamps FAT directory entries with the clock (or
	// SOURCE_DATE_EPOCH); set every one to the epoch, "." and ".." of
	// the subdirectories included (FinishFAT32 does the volume label).
	for _, p := range []string{KernelPath, InitrdPath, "anvil", ManifestPath, "anvil/.", "anvil/..",
		"EFI", "EFI/.", "EFI/..", "EFI/BOOT", "EFI/BOOT/.", "EFI/BOOT/..", bootloader.EFIPath, "grub", "grub/.", "grub/..", bootloader.ConfigPath} {
		if err := esp.Chtimes(p, in.Epoch, in.Epoch, in.Epoch); err != nil {
			return fmt.Errorf("ESP of %s: set times of %s: %w", path, p, err)
		}
	}
	if err := diskimg.FinishFAT32(store, ESPStart, in.Epoch); err != nil {
		return fmt.Errorf("ESP of %s: %w", path, err)
	}

	u := uuid.MustParse(guid("root-ext4"))
	root, err := ext4.Create(store, RootSize, RootStart, Sector, &ext4.Params{UUID: &u, VolumeName: RootLabel})
	if err != nil {
		return fmt.Errorf("root filesystem of %s: %w", path, err)
	}
	if err := diskimg.WriteFile(root, OSReleasePath, []byte(OSRelease(in))); err != nil {
		return fmt.Errorf("root filesystem of %s: %w", path, err)
	}
	for _, p := range []string{OSReleasePath, "etc", "."} {
		if err := root.Chtimes(p, in.Epoch, in.Epoch, in.Epoch); err != nil {
			return fmt.Errorf("root filesystem of %s: set times of %s: %w", path, p, err)
		}
	}
	if err := root.Close(); err != nil {
		return fmt.Errorf("root filesystem of %s: %w", path, err)
	}
	if _, err := ext4norm.Normalize(f, RootStart, in.Epoch, [16]byte(uuid.MustParse(guid("root-ext4-hash-seed")))); err != nil {
		return fmt.Errorf("root filesystem of %s: normalize: %w", path, err)
	}
	if err := bootloader.InstallBIOS(f, in.Bootloader, table.Partitions, Sector); err != nil {
		return fmt.Errorf("BIOS boot of %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
