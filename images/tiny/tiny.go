// Package tiny builds anvil-tiny, the operating system image anvil
// installs in its lab and end-to-end tests: a 64 MiB raw GPT disk (UEFI
// 2.10 §5.3) made with go-diskfs, without root, loop devices or mkfs:
//
//   - partition 1, the EFI System Partition (FAT32, label ANVIL-TINY):
//     Debian's cloud kernel (hack/fetch-kernel.sh) as vmlinuz, the
//     initramfs as initrd.img, and the anvil boot manifest anvil/boot.json
//     agent/bootconfig finds for the kexec;
//   - partition 2, a small ext4 root (label tiny-root) holding only
//     etc/os-release, so the disk looks like an operating system's;
//   - partition 3, the BIOS boot partition in the gap before the first
//     MiB: GRUB's core image, started by GRUB's boot code in the MBR.
//
// The disk boots by itself under UEFI and BIOS (package bootloader): GRUB
// as \EFI\BOOT\BOOTX64.EFI and in the MBR reads grub/grub.cfg on the ESP,
// which boots the same kernel, initrd and command line as the manifest.
//
// The initramfs is built like the agent's (package initramfs): u-root in
// Go-module mode with the pinned tools of this module, u-root's init and,
// as its uinit, tiny-init (package tinyinit), which loads the kernel's
// modules in dependency order, configures the network by DHCP, finds the
// NoCloud seed the agent appended to the disk (package nocloud) and
// phones home. Build writes tiny.raw, tiny.raw.zst and the catalogue entry
// tiny.json with the sha256 of both.
//
// The same inputs give the same bytes: u-root builds reproducibly, the
// initramfs and the image are compressed by single-threaded zstd
// encoders, partition and filesystem GUIDs are name-based, FAT time stamps
// are set to the epoch and the FAT volume serial is zero, and the ext4
// root is normalized (package ext4norm) to the epoch and a fixed hash
// seed.
package tiny

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
)

// Output file names in Config.OutDir.
const (
	RawFile       = "tiny.raw"
	ZstFile       = "tiny.raw.zst"
	CatalogueFile = "tiny.json"
)

// Config is one build's inputs.
type Config struct {
	// ModuleRoot is the anvil Go module's directory (go tool u-root runs
	// there, with its pinned version).
	ModuleRoot string
	// KernelDir is hack/fetch-kernel.sh's cache: vmlinuz, modules/*.ko and
	// release.
	KernelDir string
	// OutDir receives tiny.raw, tiny.raw.zst and tiny.json.
	OutDir string
	// Version is the image's version, stamped into tiny-init and
	// os-release.
	Version string
	// Epoch is the time stamp of every file in the image
	// (SOURCE_DATE_EPOCH); FAT cannot store dates before 1980.
	Epoch time.Time
	// MaxInitrdBytes is the size budget of the compressed initramfs.
	MaxInitrdBytes int64
	// Go is the go command (default "go").
	Go string
	// Log receives progress (default: discard).
	Log *slog.Logger
}

// Defaults returns the paths Makefile uses.
func Defaults() Config {
	return Config{
		ModuleRoot:     ".",
		KernelDir:      "/var/cache/anvil/kernel",
		OutDir:         "images/out",
		Version:        "dev",
		Epoch:          time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		MaxInitrdBytes: 12 << 20,
		Go:             "go",
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"module root", c.ModuleRoot}, {"kernel directory", c.KernelDir},
		{"output directory", c.OutDir}, {"go command", c.Go}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.name))
		}
	}
	if c.Version == "" || strings.ContainsAny(c.Version, " \t\n'\"") {
		errs = append(errs, fmt.Errorf("version %q: want a non-empty word without quotes", c.Version))
	}
	if c.Epoch.Year() < 1980 {
		errs = append(errs, fmt.Errorf("epoch %s: FAT time stamps start in 1980", c.Epoch.UTC().Format(time.RFC3339)))
	}
	if c.MaxInitrdBytes <= 0 {
		errs = append(errs, fmt.Errorf("initrd budget %d: want a positive number of bytes", c.MaxInitrdBytes))
	}
	return errors.Join(errs...)
}

// Result describes a build.
type Result struct {
	Catalogue Catalogue
	// TarCatalogue describes the root filesystem tarball of the same
	// system (tiny-tar.json); TarCataloguePath is where it was written.
	TarCatalogue     Catalogue
	TarCataloguePath string
	// Raw, Zst and CataloguePath are the written files.
	Raw, Zst, CataloguePath string
	// InitrdBytes is the compressed initramfs's size, InitrdCPIOBytes the
	// archive's.
	InitrdBytes, InitrdCPIOBytes int64
	// Modules are the kernel modules tiny-init loads, in order.
	Modules []string
	// Initramfs, Assemble and Compress are the steps' durations.
	Initramfs, Assemble, Compress time.Duration
}

// Build builds the initramfs, assembles the raw image, compresses it,
// writes the root filesystem tarball of the same system and the
// catalogue entries of both. The outputs are replaced only once all of
// them are complete.
func Build(ctx context.Context, c Config) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	release, err := ReadRelease(filepath.Join(c.KernelDir, "release"))
	if err != nil {
		return nil, err
	}
	kernel, err := os.ReadFile(filepath.Join(c.KernelDir, "vmlinuz"))
	if err != nil {
		return nil, fmt.Errorf("kernel (hack/fetch-kernel.sh): %w", err)
	}
	if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	tmp, err := os.MkdirTemp(c.OutDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	res := &Result{}

	t0 := time.Now()
	log.Info("building the initramfs with u-root", "kernel", release)
	ir, err := buildInitramfs(ctx, c, filepath.Join(tmp, "initramfs"))
	if err != nil {
		return nil, err
	}
	if int64(len(ir.data)) > c.MaxInitrdBytes {
		return nil, fmt.Errorf("initramfs is %d bytes (%.1f MiB), budget %d bytes", len(ir.data), float64(len(ir.data))/(1<<20), c.MaxInitrdBytes)
	}
	res.Initramfs, res.InitrdBytes, res.InitrdCPIOBytes, res.Modules = time.Since(t0), int64(len(ir.data)), ir.cpioBytes, ir.modules

	t0 = time.Now()
	grub, err := mkgrub.Build(ctx, "")
	if err != nil {
		return nil, err
	}
	in := Inputs{Kernel: kernel, Initrd: ir.data, KernelRelease: release, Version: c.Version, Epoch: c.Epoch, Bootloader: grub}
	raw := filepath.Join(tmp, RawFile)
	if err := Assemble(raw, in); err != nil {
		return nil, err
	}
	res.Assemble = time.Since(t0)

	t0 = time.Now()
	zst := filepath.Join(tmp, ZstFile)
	sums, err := compressFile(raw, zst)
	if err != nil {
		return nil, err
	}
	res.Compress = time.Since(t0)
	res.Catalogue = NewCatalogue(in, sums)
	if err := writeCatalogue(filepath.Join(tmp, CatalogueFile), res.Catalogue); err != nil {
		return nil, err
	}
	tarPath := filepath.Join(tmp, TarFile)
	if err := writeTarFile(tarPath, in); err != nil {
		return nil, err
	}
	tarSums, err := compressFile(tarPath, filepath.Join(tmp, TarZstFile))
	if err != nil {
		return nil, err
	}
	res.TarCatalogue = NewTarCatalogue(in, tarSums)
	if err := writeCatalogue(filepath.Join(tmp, TarCatalogueFile), res.TarCatalogue); err != nil {
		return nil, err
	}
	// The catalogues last: they name the other files.
	for _, n := range []string{RawFile, ZstFile, TarFile, TarZstFile, CatalogueFile, TarCatalogueFile} {
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(c.OutDir, n)); err != nil {
			return nil, fmt.Errorf("move %s into place: %w", n, err)
		}
	}
	res.Raw, res.Zst, res.CataloguePath = filepath.Join(c.OutDir, RawFile), filepath.Join(c.OutDir, ZstFile), filepath.Join(c.OutDir, CatalogueFile)
	res.TarCataloguePath = filepath.Join(c.OutDir, TarCatalogueFile)
	return res, nil
}

func writeCatalogue(path string, c Catalogue) error {
	js, err := c.JSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		return fmt.Errorf("write catalogue: %w", err)
	}
	return nil
}

func writeTarFile(path string, in Inputs) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = WriteTar(f, in)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tarball %s: %w", path, err)
	}
	return nil
}

// ReadRelease reads the kernel release (uname -r) from hack/fetch-kernel.sh's
// release file: its first word.
func ReadRelease(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("kernel release (hack/fetch-kernel.sh): %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	if sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("kernel release file %s has no release on its first line", path)
}
