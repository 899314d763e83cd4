package erase

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/anvil-metal/anvil/agent/blockdev"
)

// Result says what an erase did to one device.
type Result struct {
	Path     string
	Method   string
	Bytes    int64
	Duration time.Duration
}

// Quick clears the regions of QuickPlan on the device at path (its own
// signature regions and those of every partition its partition table
// lists; an unreadable table is an error, ErrPartitionTable), syncs,
// re-reads them through a new descriptor and fails unless every byte is
// zero, then asks the kernel to re-read the (now absent) partition table.
func Quick(ctx context.Context, path string) (Result, error) {
	return quick(ctx, path, true)
}

// ClearTables zeroes and verifies the device's own first and last MiB
// only (both partition tables and the boot code), without reading the
// partitions: a disk whose table is half-written or damaged is cleared
// too. The installer calls it to destroy a failed install.
func ClearTables(ctx context.Context, path string) (Result, error) {
	return quick(ctx, path, false)
}

func quick(ctx context.Context, path string, inside bool) (Result, error) {
	start := time.Now()
	d, err := blockdev.Open(path, os.O_RDWR)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	var parts []Partition
	if inside {
		if parts, err = readPartitions(d); err != nil {
			return Result{}, err
		}
	}
	rs := QuickPlan(d.Size, d.Align, parts)
	buf, err := blockdev.NewBuffer(MiB)
	if err != nil {
		return Result{}, err
	}
	defer buf.Free()
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := writeZeros(d, buf, r); err != nil {
			return Result{}, err
		}
	}
	if err := d.Sync(); err != nil {
		return Result{}, err
	}
	if err := Verify(path, rs); err != nil {
		return Result{}, err
	}
	if err := d.RereadPartitions(); err != nil {
		return Result{}, err
	}
	return Result{Path: path, Method: fmt.Sprintf("quick: %d regions of the device and its %d partitions zeroed and verified", len(rs), len(parts)), Bytes: Total(rs), Duration: time.Since(start)}, nil
}

// readPartitions reads the partition table of the open device through a
// buffered descriptor (the table reader makes small unaligned reads),
// after dropping the device's page cache.
func readPartitions(d *blockdev.Device) ([]Partition, error) {
	d.FlushBuffers()
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("quick erase: read partition table: %w", err)
	}
	defer f.Close()
	parts, err := ReadPartitions(f, d.Size, d.LogicalBlock)
	if err != nil {
		return nil, fmt.Errorf("quick erase of %s: %w", d.Path, err)
	}
	return parts, nil
}

func writeZeros(d *blockdev.Device, buf []byte, r Region) error {
	clear(buf)
	for off := r.Off; off < r.Off+r.Len; {
		n := min(int64(len(buf)), r.Off+r.Len-off)
		w, err := d.WriteAt(buf[:n], off)
		if err != nil {
			return fmt.Errorf("zero %s [%d,%d): %w", d.Path, off, off+n, err)
		}
		off += int64(w)
	}
	return nil
}

// Verify re-reads the regions through a fresh direct-I/O descriptor (so no
// stale page cache hides old data) and fails at the first non-zero byte.
func Verify(path string, rs []Region) error {
	d, err := blockdev.Open(path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer d.Close()
	d.FlushBuffers()
	buf, err := blockdev.NewBuffer(MiB)
	if err != nil {
		return err
	}
	defer buf.Free()
	for _, r := range rs {
		for off := r.Off; off < r.Off+r.Len; {
			n := min(int64(len(buf)), r.Off+r.Len-off)
			got, err := d.ReadAt(buf[:n], off)
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
