// Package debian holds the build and the checks of anvil's Debian 12 image
// (images/debian/build.sh, make images-debian): a debootstrap'ed bookworm
// with Debian's cloud kernel, cloud-init limited to the NoCloud datasource
// and anvil-phone-home.service, shipped as a root filesystem tarball and
// as a raw disk image made from it by anvil's own rootfs installer. This
// package makes the raw image and checks images; build.sh does the rest.
package debian

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
)

// Console is the raw image's console: the screen and the first serial
// port (the last console= is /dev/console).
const Console = "console=tty0 console=ttyS0,115200"

// MakeRaw installs the archive at tarPath onto a new sparse image file out
// of size bytes with agent/image/rootfs, with GRUB for UEFI and BIOS
// (agent/bootloader/mkgrub) so the image boots from its disk, and checks
// that agent/bootconfig finds what to kexec on it. On error out is
// removed.
func MakeRaw(ctx context.Context, tarPath, out string, size int64) (res rootfs.Result, boot bootconfig.Boot, err error) {
	in, err := os.Open(tarPath)
	if err != nil {
		return res, boot, err
	}
	defer in.Close()
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return res, boot, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, os.Remove(out))
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return res, boot, fmt.Errorf("size %s to %d bytes: %w", out, size, err)
	}
	if err := f.Close(); err != nil {
		return res, boot, fmt.Errorf("close %s: %w", out, err)
	}
	// zeroed: a fresh sparse file reads as zeroes, so the image stays
	// sparse.
	grub, err := mkgrub.Build(ctx, "")
	if err != nil {
		return res, boot, err
	}
	if res, err = rootfs.Install(ctx, out, true, in, "", rootfs.Options{Bootloader: &grub, KernelArgs: Console}); err != nil {
		return res, boot, err
	}
	if res.Kernel.Path == "" || res.Kernel.Initrd == "" {
		return res, boot, fmt.Errorf("%s: the installer found no boot/vmlinuz-* with its initrd (%s)", tarPath, res)
	}
	if boot, err = CheckBoot(out, res.Plan.Root.GUID); err != nil {
		return res, boot, err
	}
	return res, boot, nil
}

// CheckBoot looks the boot configuration up on the image as anvil-agent
// does before its kexec and checks it names a kernel, an initrd and the
// root partition by PARTUUID (rootGUID; empty: any).
func CheckBoot(image, rootGUID string) (bootconfig.Boot, error) {
	b, err := bootconfig.Lookup(image)
	if err != nil {
		return b, fmt.Errorf("boot configuration of %s: %w", image, err)
	}
	var errs []error
	if !strings.HasPrefix(b.Kernel.Path, "boot/vmlinuz-") {
		errs = append(errs, fmt.Errorf("kernel %s is not a boot/vmlinuz-*", b.Kernel))
	}
	if len(b.Initrds) != 1 || !strings.HasPrefix(b.Initrds[0].Path, "boot/initrd.img-") {
		errs = append(errs, fmt.Errorf("initrds %v: want one boot/initrd.img-*", b.Initrds))
	}
	root := ""
	for _, f := range strings.Fields(b.Cmdline) {
		if v, ok := strings.CutPrefix(f, "root="); ok {
			root = v
		}
	}
	guid, ok := strings.CutPrefix(root, "PARTUUID=")
	switch {
	case !ok:
		errs = append(errs, fmt.Errorf("cmdline %q: want root=PARTUUID=", b.Cmdline))
	case rootGUID != "" && !strings.EqualFold(guid, rootGUID):
		errs = append(errs, fmt.Errorf("cmdline %q: root is not the root partition %s", b.Cmdline, rootGUID))
	}
	if err := errors.Join(errs...); err != nil {
		return b, fmt.Errorf("boot configuration of %s (%s): %w", image, b.Describe(), err)
	}
	return b, nil
}
