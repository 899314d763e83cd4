package erase

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/agent/blockdev"
)

// ErrUnsupported is an erase ioctl the device does not support; the caller
// falls back to another method.
var ErrUnsupported = errors.New("not supported by the device")

// Progress receives bytes done and total; it may be nil.
type Progress func(done, total uint64)

func (p Progress) report(done, total int64) {
	if p != nil {
		p(uint64(done), uint64(total))
	}
}

// rangeChunk is how much one BLKDISCARD/BLKZEROOUT call covers, so progress
// and cancellation stay responsive on large disks.
const rangeChunk = 1 << 30

// rangeIoctl issues a [start, length) block-range ioctl over the whole
// device in chunks.
func rangeIoctl(ctx context.Context, path string, req uint, name string, p Progress) (Result, error) {
	start := time.Now()
	d, err := blockdev.Open(path, os.O_WRONLY)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	if !d.Block {
		return Result{}, fmt.Errorf("%s %s: %w (not a block device)", name, path, ErrUnsupported)
	}
	for off := int64(0); off < d.Size; off += rangeChunk {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		n := min(rangeChunk, d.Size-off)
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), uintptr(req), uintptr(unsafe.Pointer(&r))); e != 0 {
			if e == unix.EOPNOTSUPP || e == unix.ENOTTY || e == unix.EINVAL {
				return Result{}, fmt.Errorf("%s %s [%d,%d): %w: %v", name, path, off, off+n, ErrUnsupported, e)
			}
			return Result{}, fmt.Errorf("%s %s [%d,%d): %w", name, path, off, off+n, e)
		}
		p.report(off+n, d.Size)
	}
	d.FlushBuffers()
	return Result{Path: path, Method: name, Bytes: d.Size, Duration: time.Since(start)}, nil
}

// ZeroOut makes the kernel zero every block (BLKZEROOUT). The kernel
// offloads it to the device (WRITE ZEROES) where it can and writes zero
// pages itself where it cannot, so the result always reads as zeroes.
func ZeroOut(ctx context.Context, path string, p Progress) (Result, error) {
	return rangeIoctl(ctx, path, unix.BLKZEROOUT, "BLKZEROOUT", p)
}

// Discard discards every block (BLKDISCARD, or BLKSECDISCARD when secure).
// A plain discard does not promise what the blocks read afterwards; callers
// verify before trusting zeroes.
func Discard(ctx context.Context, path string, secure bool, p Progress) (Result, error) {
	if secure {
		return rangeIoctl(ctx, path, unix.BLKSECDISCARD, "BLKSECDISCARD", p)
	}
	return rangeIoctl(ctx, path, unix.BLKDISCARD, "BLKDISCARD", p)
}

// OverwriteBuffer is the size of each O_DIRECT write of Overwrite.
const OverwriteBuffer = 8 << 20

// Overwrite writes zeroes over every block with large aligned O_DIRECT
// writes, depth of them in flight on disjoint ranges, then fdatasync.
func Overwrite(ctx context.Context, path string, depth int, p Progress) (Result, error) {
	start := time.Now()
	d, err := blockdev.Open(path, os.O_WRONLY)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	depth = max(depth, 1)
	var next, done atomic.Int64
	var progressMu sync.Mutex // callers get one progress call at a time
	var wg sync.WaitGroup
	errs := make([]error, depth)
	stop := make(chan struct{})
	var stopOnce sync.Once
	for i := range depth {
		wg.Go(func() {
			buf, err := blockdev.NewBuffer(OverwriteBuffer)
			if err != nil {
				errs[i] = err
				stopOnce.Do(func() { close(stop) })
				return
			}
			defer buf.Free()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := ctx.Err(); err != nil {
					errs[i] = err
					stopOnce.Do(func() { close(stop) })
					return
				}
				off := next.Add(OverwriteBuffer) - OverwriteBuffer
				if off >= d.Size {
					return
				}
				n := min(int64(OverwriteBuffer), d.Size-off)
				b := buf[:n]
				if n%d.LogicalBlock != 0 {
					errs[i] = fmt.Errorf("overwrite %s: size %d is not a multiple of the %d-byte block", path, d.Size, d.LogicalBlock)
					stopOnce.Do(func() { close(stop) })
					return
				}
				if _, err := d.WriteAt(b, off); err != nil {
					errs[i] = fmt.Errorf("overwrite %s [%d,%d): %w", path, off, off+n, err)
					stopOnce.Do(func() { close(stop) })
					return
				}
				progressMu.Lock()
				p.report(done.Add(n), d.Size)
				progressMu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	if err := d.Sync(); err != nil {
		return Result{}, err
	}
	return Result{Path: path, Method: fmt.Sprintf("overwrite (zeroes, O_DIRECT, %d MiB writes x%d)", OverwriteBuffer>>20, depth), Bytes: d.Size, Duration: time.Since(start)}, nil
}

// SampleRegions is what VerifySample reads on a device of size bytes: the
// first and last MiB and n random 4 KiB blocks (seeded, so a failure can
// be reproduced).
func SampleRegions(size int64, n int, seed uint64) []Region {
	rs := QuickRegions(size, 4096)
	blocks := size / 4096
	if blocks <= 0 {
		return rs
	}
	r := rand.New(rand.NewPCG(seed, uint64(size)))
	for range n {
		rs = append(rs, Region{Off: r.Int64N(blocks) * 4096, Len: 4096})
	}
	return merge(rs)
}

// VerifySample checks that the device reads as zeroes at the first and last
// MiB and at n random blocks, through a fresh O_DIRECT descriptor.
func VerifySample(path string, n int) error {
	d, err := blockdev.Open(path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	size := d.Size
	d.Close()
	seed := uint64(time.Now().UnixNano())
	if err := Verify(path, SampleRegions(size, n, seed)); err != nil {
		return fmt.Errorf("%w (sample seed %d)", err, seed)
	}
	return nil
}

// Markers are random blocks written before a hardware erase; CheckGone
// proves the erase by finding none of them (MAAS does the same).
type Markers struct {
	path    string
	offsets []int64
	data    []byte
}

// WriteMarkers writes a random 4 KiB block at n offsets spread over the
// device (first and last block included), with O_DIRECT and fdatasync.
// Written before an erase, they catch (CheckGone) any skipped range at
// least as wide as the gap between two markers, wherever it lies.
func WriteMarkers(path string, n int) (*Markers, error) {
	d, err := blockdev.Open(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	buf, err := blockdev.NewBuffer(4096)
	if err != nil {
		return nil, err
	}
	defer buf.Free()
	if _, err := crand.Read(buf); err != nil {
		return nil, err
	}
	m := &Markers{path: path, data: append([]byte(nil), buf...)}
	blocks := d.Size / 4096
	if blocks < 2 {
		return nil, fmt.Errorf("markers: %s is too small (%d bytes)", path, d.Size)
	}
	n = max(n, 2)
	for i := range n {
		off := (blocks - 1) * int64(i) / int64(n-1) * 4096
		if _, err := d.WriteAt(buf, off); err != nil {
			return nil, fmt.Errorf("write marker on %s at %d: %w", path, off, err)
		}
		m.offsets = append(m.offsets, off)
	}
	if err := d.Sync(); err != nil {
		return nil, err
	}
	return m, nil
}

// markerSector is the unit CheckGone compares: the smallest logical block.
const markerSector = 512

// CheckGone fails if any sector of any marker can still be read back.
func (m *Markers) CheckGone() error {
	d, err := blockdev.Open(m.path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("check markers: %w", err)
	}
	defer d.Close()
	d.FlushBuffers()
	buf, err := blockdev.NewBuffer(4096)
	if err != nil {
		return err
	}
	defer buf.Free()
	for _, off := range m.offsets {
		if _, err := d.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read marker on %s at %d: %w", m.path, off, err)
		}
		// Any 512-byte sector still holding its part of the marker is a
		// part of the device the erase did not reach: a whole-block
		// comparison would pass an erase that skipped a range ending or
		// starting inside a marker.
		for s := 0; s < len(buf); s += markerSector {
			if string(buf[s:s+markerSector]) == string(m.data[s:s+markerSector]) {
				return fmt.Errorf("marker at offset %d of %s is still readable at byte %d: the erase did not reach it", off, m.path, off+int64(s))
			}
		}
	}
	return nil
}
