// Package mkgrub builds the GRUB 2 images package bootloader installs, at
// build time only (images, the agent's initramfs), never on a machine
// being provisioned: grub-mkimage from Debian's grub-common makes an
// x86_64-efi image from grub-efi-amd64-bin's modules and an i386-pc core
// image from grub-pc-bin's, both with bootloader.Prefix and every module
// they need built in (no module is loaded from disk), and boot.img is
// taken as grub-pc-bin ships it. grub-mkimage 2.06 gives the same bytes
// for the same inputs.
package mkgrub

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/anvil-metal/anvil/agent/bootloader"
)

// Debian's GRUB module directories.
const (
	EFIModules  = "/usr/lib/grub/x86_64-efi"
	BIOSModules = "/usr/lib/grub/i386-pc"
)

// modules both images carry: GPT, FAT (the ESP) and ext4 (a rootfs's
// kernel), the menu and its script commands, Linux loading, the serial
// terminal.
var common = []string{"part_gpt", "part_msdos", "fat", "ext2", "normal", "configfile", "linux", "search", "search_fs_uuid",
	"search_fs_file", "search_label", "echo", "test", "serial", "terminal", "sleep", "reboot", "halt", "ls", "cat"}

// Build makes the images; dir, when not empty, receives them as the files
// bootloader.LoadFiles reads.
func Build(ctx context.Context, dir string) (bootloader.Files, error) {
	var f bootloader.Files
	tmp, err := os.MkdirTemp("", "anvil-mkgrub-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(tmp)
	efi, core := filepath.Join(tmp, bootloader.EFIFile), filepath.Join(tmp, bootloader.CoreFile)
	for _, run := range [][]string{
		append([]string{"-O", "x86_64-efi", "-d", EFIModules, "-o", efi, "-p", bootloader.Prefix}, append(common, "efi_gop")...),
		append([]string{"-O", "i386-pc", "-d", BIOSModules, "-o", core, "-p", bootloader.Prefix}, append(common, "biosdisk")...),
	} {
		cmd := exec.CommandContext(ctx, "grub-mkimage", run...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return f, fmt.Errorf("grub-mkimage %s (Debian packages grub-common, grub-efi-amd64-bin, grub-pc-bin; hack/install-deps.sh): %v: %s",
				strings.Join(run[:2], " "), err, bytes.TrimSpace(out))
		}
	}
	if f.EFI, err = os.ReadFile(efi); err != nil {
		return f, err
	}
	if f.BIOSCore, err = os.ReadFile(core); err != nil {
		return f, err
	}
	if f.BIOSBoot, err = os.ReadFile(filepath.Join(BIOSModules, bootloader.BootFile)); err != nil {
		return f, fmt.Errorf("GRUB boot.img (Debian package grub-pc-bin): %w", err)
	}
	v, err := exec.CommandContext(ctx, "grub-mkimage", "--version").Output()
	if err != nil {
		return f, fmt.Errorf("grub-mkimage --version: %w", err)
	}
	// "grub-mkimage (GRUB) 2.06-13+deb12u2"
	f.Version = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(v)), "grub-mkimage (GRUB)"))
	if err := f.Validate(); err != nil {
		return f, err
	}
	if dir == "" {
		return f, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	for name, b := range map[string][]byte{bootloader.EFIFile: f.EFI, bootloader.CoreFile: f.BIOSCore, bootloader.BootFile: f.BIOSBoot,
		bootloader.VersionFile: []byte(f.Version + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return f, fmt.Errorf("GRUB images: %w", err)
		}
	}
	return f, nil
}
