package erase

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result says what an erase did to one device.
type Result struct {
	Path     string
	Method   string
	Bytes    int64
	Duration time.Duration
}

// device is an open block device (or, in tests, a regular file).
type device struct {
	f     *os.File
	path  string
	size  int64
	align int64
	block bool
}

// open opens path for direct I/O. A block device opened for writing is
// opened O_EXCL, which the kernel refuses while the device is mounted or
// otherwise claimed.
func open(path string, flags int) (*device, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	block := st.Mode()&os.ModeDevice != 0
	if block && flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(path, flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) { // a filesystem without O_DIRECT (tests on tmpfs)
		f, err = os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	d := &device{f: f, path: path, size: st.Size(), align: 4096, block: block}
	if block {
		sz, err := blkGetSize64(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("BLKGETSIZE64 %s: %w", path, err)
		}
		d.size = int64(sz)
		if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss > 0 {
			d.align = int64(max(ss, 4096))
		}
	}
	return d, nil
}

func blkGetSize64(f *os.File) (uint64, error) {
	var sz uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
		return 0, e
	}
	return sz, nil
}

// alignedBuf returns a page-aligned zeroed buffer (O_DIRECT needs aligned
// memory) and its release function.
func alignedBuf(n int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap %d bytes: %w", n, err)
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

// Quick clears the regions of QuickRegions on the device at path, syncs,
// re-reads them through a new descriptor and fails unless every byte is
// zero, then asks the kernel to re-read the (now absent) partition table.
func Quick(ctx context.Context, path string) (Result, error) {
	start := time.Now()
	d, err := open(path, os.O_RDWR)
	if err != nil {
		return Result{}, err
	}
	defer d.f.Close()
	rs := QuickRegions(d.size, d.align)
	buf, free, err := alignedBuf(MiB)
	if err != nil {
		return Result{}, err
	}
	defer free()
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := d.writeZeros(buf, r); err != nil {
			return Result{}, err
		}
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return Result{}, fmt.Errorf("fdatasync %s: %w", path, err)
	}
	if err := Verify(path, rs); err != nil {
		return Result{}, err
	}
	if d.block {
		if err := unix.IoctlSetInt(int(d.f.Fd()), unix.BLKRRPART, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return Result{}, fmt.Errorf("BLKRRPART %s: %w", path, err)
		}
	}
	return Result{Path: path, Method: fmt.Sprintf("quick: %d regions zeroed and verified", len(rs)), Bytes: Total(rs), Duration: time.Since(start)}, nil
}

func (d *device) writeZeros(buf []byte, r Region) error {
	clear(buf)
	for off := r.Off; off < r.Off+r.Len; {
		n := min(int64(len(buf)), r.Off+r.Len-off)
		w, err := d.f.WriteAt(buf[:n], off)
		if err != nil {
			return fmt.Errorf("zero %s [%d,%d): %w", d.path, off, off+n, err)
		}
		off += int64(w)
	}
	return nil
}

// Verify re-reads the regions through a fresh direct-I/O descriptor (so no
// stale page cache hides old data) and fails at the first non-zero byte.
func Verify(path string, rs []Region) error {
	d, err := open(path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer d.f.Close()
	if d.block {
		_ = unix.IoctlSetInt(int(d.f.Fd()), unix.BLKFLSBUF, 0)
	}
	buf, free, err := alignedBuf(MiB)
	if err != nil {
		return err
	}
	defer free()
	for _, r := range rs {
		for off := r.Off; off < r.Off+r.Len; {
			n := min(int64(len(buf)), r.Off+r.Len-off)
			got, err := d.f.ReadAt(buf[:n], off)
			if err != nil && got < int(n) {
				return fmt.Errorf("verify %s: read [%d,%d): %w", path, off, off+n, err)
			}
			if i := firstNonZero(buf[:n]); i >= 0 {
				return fmt.Errorf("verify %s: byte at offset %d is not zero after erase", path, off+int64(i))
			}
			off += n
		}
	}
	return nil
}

// firstNonZero returns the index of the first non-zero byte, or -1.
func firstNonZero(b []byte) int {
	var zero [4096]byte
	for i := 0; i < len(b); i += len(zero) {
		chunk := b[i:min(i+len(zero), len(b))]
		if string(chunk) != string(zero[:len(chunk)]) {
			for j, c := range chunk {
				if c != 0 {
					return i + j
				}
			}
		}
	}
	return -1
}
