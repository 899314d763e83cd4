// Package blockdev opens block devices for the agent's direct I/O: O_DIRECT
// so the page cache neither hides stale data nor slows large writes, O_EXCL
// for writers so the kernel refuses a mounted or claimed device, and the
// device's size and logical block size from BLKGETSIZE64 and BLKSSZGET.
// Regular files stand in for devices in tests; on filesystems without
// O_DIRECT (tmpfs) they are opened buffered.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device is an open block device or image file.
type Device struct {
	*os.File
	Path string
	// Size in bytes.
	Size int64
	// Align is the I/O alignment: the logical block size, at least 4096
	// (page-aligned buffers and offsets satisfy every device).
	Align int64
	// LogicalBlock is the device's logical block size (512 for files).
	LogicalBlock int64
	// Block is true for a block device.
	Block bool
	// Direct is true when the descriptor bypasses the page cache.
	Direct bool
}

// Open opens path with flags (os.O_RDONLY, os.O_RDWR, os.O_WRONLY plus
// extras) for direct I/O.
func Open(path string, flags int) (*Device, error) {
	return open(path, flags, true)
}

// OpenBuffered opens path like Open but through the page cache, for
// writers that make small unaligned writes (filesystem builders); call
// Sync before trusting the medium.
func OpenBuffered(path string, flags int) (*Device, error) {
	return open(path, flags, false)
}

func open(path string, flags int, wantDirect bool) (*Device, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	block := st.Mode()&os.ModeDevice != 0
	if block && flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		flags |= unix.O_EXCL
	}
	direct := wantDirect
	var f *os.File
	if direct {
		f, err = os.OpenFile(path, flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	}
	if !direct || errors.Is(err, unix.EINVAL) { // buffered, or a filesystem without O_DIRECT
		direct = false
		f, err = os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	d := &Device{File: f, Path: path, Size: st.Size(), Align: 4096, LogicalBlock: 512, Block: block, Direct: direct}
	if block {
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
			f.Close()
			return nil, fmt.Errorf("BLKGETSIZE64 %s: %w", path, e)
		}
		d.Size = int64(sz)
		if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss > 0 {
			d.LogicalBlock = int64(ss)
			d.Align = max(int64(ss), 4096)
		}
	}
	return d, nil
}

// RereadPartitions asks the kernel to re-read the partition table
// (BLKRRPART). Devices that cannot hold partitions (EINVAL, e.g. a loop
// device without partscan) and regular files are not an error.
func (d *Device) RereadPartitions() error {
	if !d.Block {
		return nil
	}
	if err := unix.IoctlSetInt(int(d.Fd()), unix.BLKRRPART, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("BLKRRPART %s: %w", d.Path, err)
	}
	return nil
}

// FlushBuffers drops the device's page cache (BLKFLSBUF) so buffered reads
// see the medium; a no-op for files.
func (d *Device) FlushBuffers() {
	if d.Block {
		_ = unix.IoctlSetInt(int(d.Fd()), unix.BLKFLSBUF, 0)
	}
}

// Sync waits until written data is on the medium (fdatasync).
func (d *Device) Sync() error {
	if err := unix.Fdatasync(int(d.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", d.Path, err)
	}
	return nil
}

// Buffer is page-aligned memory outside the Go heap, as O_DIRECT needs.
type Buffer []byte

// NewBuffer maps n bytes of zeroed, page-aligned anonymous memory.
func NewBuffer(n int) (Buffer, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", n, err)
	}
	return b, nil
}

// Free unmaps the buffer.
func (b Buffer) Free() {
	if b != nil {
		_ = unix.Munmap(b)
	}
}
