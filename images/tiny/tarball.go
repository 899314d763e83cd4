package tiny

import (
	"archive/tar"
	"fmt"
	"io"
)

// The root filesystem tarball's files in Config.OutDir: the same system as
// the raw image, for anvil's rootfs installer (agent/image/rootfs), which
// lays out the disk and writes the boot loader itself.
const (
	TarFile          = "tiny.tar"
	TarZstFile       = "tiny.tar.zst"
	TarCatalogueFile = "tiny-tar.json"
)

// WriteTar writes the root filesystem tarball: the kernel and initramfs as
// a distribution lays them out (boot/vmlinuz-R and boot/initrd.img-R, the
// /vmlinuz and /initrd.img links to them) and etc/os-release, every entry
// owned by root and stamped with the epoch. The rootfs installer finds the
// kernel and writes the boot manifest and GRUB's configuration; the
// command line it writes names the root partition and the machine's
// console, and tiny-init, which runs from the initramfs, needs no more.
func WriteTar(w io.Writer, in Inputs) error {
	tw := tar.NewWriter(w)
	kernel, initrd := "boot/vmlinuz-"+in.KernelRelease, "boot/initrd.img-"+in.KernelRelease
	hdr := func(name string, typ byte, mode int64, size int64, link string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, Linkname: link, ModTime: in.Epoch, Format: tar.FormatPAX}
	}
	entries := []struct {
		h    *tar.Header
		body []byte
	}{
		{hdr("boot/", tar.TypeDir, 0o755, 0, ""), nil},
		{hdr(kernel, tar.TypeReg, 0o644, int64(len(in.Kernel)), ""), in.Kernel},
		{hdr(initrd, tar.TypeReg, 0o644, int64(len(in.Initrd)), ""), in.Initrd},
		{hdr("etc/", tar.TypeDir, 0o755, 0, ""), nil},
		{hdr(OSReleasePath, tar.TypeReg, 0o644, int64(len(OSRelease(in))), ""), []byte(OSRelease(in))},
		{hdr("vmlinuz", tar.TypeSymlink, 0o777, 0, kernel), nil},
		{hdr("initrd.img", tar.TypeSymlink, 0o777, 0, initrd), nil},
	}
	for _, e := range entries {
		if err := tw.WriteHeader(e.h); err != nil {
			return fmt.Errorf("tarball entry %s: %w", e.h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return fmt.Errorf("tarball entry %s: %w", e.h.Name, err)
		}
	}
	return tw.Close()
}

// NewTarCatalogue describes the tarball built from in.
func NewTarCatalogue(in Inputs, s Sums) Catalogue {
	c := NewCatalogue(in, s)
	c.ID, c.File, c.Format, c.RawFile = "anvil-tiny-tar", TarZstFile, "tar-zstd", TarFile
	c.Cmdline = ""
	return c
}
