package kexec

import (
	"fmt"
	"os"

	urkexec "github.com/u-root/u-root/pkg/boot/kexec"
	"golang.org/x/sys/unix"
)

// kernel is the real Syscalls.
type kernel struct{}

var _ Syscalls = kernel{}

// FileLoad implements Syscalls: kexec_file_load(2).
func (kernel) FileLoad(k, initrd *os.File, cmdline string) error {
	return urkexec.FileLoad(k, initrd, cmdline)
}

// Reboot implements Syscalls: sync, then reboot(2) into the loaded kernel
// (kexec does not sync filesystems itself).
func (kernel) Reboot() error {
	unix.Sync()
	return urkexec.Reboot()
}

// load hands the image to sys through memory-backed files (memfd_create),
// as kexec_file_load takes file descriptors.
func load(sys Syscalls, im Image) error {
	k, err := memFile("kernel", im.Kernel)
	if err != nil {
		return err
	}
	defer k.Close()
	var ir *os.File
	if len(im.Initrd) > 0 {
		if ir, err = memFile("initrd", im.Initrd); err != nil {
			return err
		}
		defer ir.Close()
	}
	return sys.FileLoad(k, ir, im.Cmdline)
}

func memFile(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("anvil-kexec-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create for the %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:anvil-kexec-"+name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the %s (%d bytes) to a memfd: %w", name, len(b), err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("rewind the %s memfd: %w", name, err)
	}
	return f, nil
}
