// Package growpart fits a written disk image's GUID Partition Table (UEFI
// 2.10 §5.3) to the disk it was written on. An image is usually smaller than
// the disk: its backup GPT header sits at the image's end, not the disk's,
// and its root partition ends early. Grow moves the backup header and the
// backup partition array to the last LBAs of the disk, raises the usable
// range to match, and extends the last partition to the end when it is a
// Linux root or data partition. The filesystem inside is not resized here;
// cloud-init's resize_rootfs (or the image's own first-boot unit) does that.
// Options can keep room at the disk's end (agent/seed puts its NoCloud
// partition there) and drop a stale partition the caller rewrites.
//
// The table is read through agent/disks/gptread, which tells a disk that
// positively has no GPT (ErrNoGPT: Grow has nothing to do) from one whose
// GPT is there but cannot be trusted (ErrUnreadableGPT: Grow fails); Grow
// requires the primary header, since it rewrites the table.
package growpart

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
)

// Growable partition types: Linux filesystem data and the Discoverable
// Partitions Specification's root partitions.
var growable = map[string]string{
	"0FC63DAF-8483-4772-8E47-7D69E4C79E3D": "Linux filesystem",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
	"B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM64)",
	"69DAD710-2CE4-4E3C-B16C-21A1D49ABED3": "Linux root (ARM)",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
}

// Errors of Grow, callers branch on with errors.Is: gptread's sentinels
// under this package's names.
var (
	// ErrNoGPT is a disk that positively has no GPT (gptread.ErrNoGPT).
	ErrNoGPT = gptread.ErrNoGPT
	// ErrUnreadableGPT is a disk showing signs of a GPT that cannot be
	// read or does not verify, or whose primary header is damaged
	// (gptread.ErrUnreadable).
	ErrUnreadableGPT = gptread.ErrUnreadable
)

// Part is one partition, in logical blocks (End inclusive).
type Part struct {
	Index      int
	Start, End uint64
	Type       string
}

// Decision says what Plan chose.
type Decision struct {
	Grow   bool
	Index  int
	NewEnd uint64
	Reason string
}

// Plan decides whether the partition that ends last can grow to limit
// (the disk's last usable LBA after the backup GPT moved, or the last one
// before a reserve). A partition already ending at or past limit is left
// as it is, never shrunk.
func Plan(parts []Part, limit uint64) Decision {
	var last *Part
	for i := range parts {
		if last == nil || parts[i].End > last.End {
			last = &parts[i]
		}
	}
	switch {
	case last == nil:
		return Decision{Reason: "no partition"}
	case last.End >= limit:
		return Decision{Index: last.Index, Reason: fmt.Sprintf("partition %d already ends at block %d, at or past the grow limit %d", last.Index, last.End, limit)}
	}
	name, ok := growable[strings.ToUpper(last.Type)]
	if !ok {
		return Decision{Index: last.Index, Reason: fmt.Sprintf("last partition %d has type %s, not a Linux root or data partition", last.Index, last.Type)}
	}
	return Decision{Grow: true, Index: last.Index, NewEnd: limit,
		Reason: fmt.Sprintf("partition %d (%s) grown from block %d to %d", last.Index, name, last.End, limit)}
}

// Options tune Grow; the zero value grows to the last usable block.
type Options struct {
	// Reserve is how many bytes at the disk's end stay outside the grown
	// partition, backup GPT included; the partition then ends at the last
	// whole MiB before them. 0 grows to the last usable block.
	Reserve int64
	// Drop names GPT partitions removed before planning (a first-boot
	// seed the caller writes afresh), so they do not stop the partition
	// before them from growing.
	Drop []string
}

// Result says what Grow did.
type Result struct {
	// GPT is false for a disk without a GPT (nothing to do).
	GPT bool
	// Moved is true when the backup GPT was moved to the disk's end.
	Moved bool
	// Dropped are the indexes of partitions removed by Options.Drop.
	Dropped []int
	Decision
}

// Grow fits the GPT on the device or file at path (size bytes, logical
// block size lbs) to the whole device. A disk with positively no GPT (an
// MBR-only or unpartitioned image) is left alone: Result.GPT is false and
// the error nil. A GPT that cannot be read or verified is an error
// wrapping ErrUnreadableGPT.
func Grow(path string, size int64, lbs int, o Options) (Result, error) {
	if o.Reserve < 0 || o.Reserve >= size {
		return Result{}, fmt.Errorf("grow %s: reserve of %d bytes on a %d-byte disk", path, o.Reserve, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	t, err := gptread.Read(f, size, lbs, gptread.RequirePrimary())
	if errors.Is(err, ErrNoGPT) {
		return Result{Decision: Decision{Reason: err.Error()}}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("grow %s (%d-byte blocks): %w", path, lbs, err)
	}
	res := Result{GPT: true}
	if t.TotalSize() != uint64(size) {
		t.Resize(uint64(size))
		res.Moved = true
	}
	var parts []Part
	var kept []*gpt.Partition
	byIndex := map[int]*gpt.Partition{}
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		if slices.Contains(o.Drop, p.Name) {
			res.Dropped = append(res.Dropped, p.Index)
			continue
		}
		kept = append(kept, p)
		byIndex[p.Index] = p
		parts = append(parts, Part{Index: p.Index, Start: p.Start, End: p.End, Type: string(p.Type)})
	}
	t.Partitions = kept
	res.Decision = Plan(parts, growLimit(t.LastDataSector(), size, lbs, o.Reserve))
	if res.Grow && o.Reserve > 0 {
		res.Reason += fmt.Sprintf(", leaving %d MiB at the disk's end", (size-int64(res.NewEnd+1)*int64(lbs))>>20)
	}
	if len(res.Dropped) > 0 {
		res.Reason += fmt.Sprintf("; dropped partitions %v named %q", res.Dropped, o.Drop)
	}
	if res.Grow {
		p := byIndex[res.Index]
		p.End = res.NewEnd
		p.Size = (p.End - p.Start + 1) * uint64(lbs)
	}
	if !res.Moved && !res.Grow && len(res.Dropped) == 0 {
		return res, nil
	}
	if err := t.Write(f, size); err != nil {
		return res, fmt.Errorf("write GPT on %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("fsync %s: %w", path, err)
	}
	return res, nil
}

// growLimit is the last block a grown partition may use: the last usable
// one, or with a reserve the last one before the final reserve bytes,
// aligned down to a MiB.
func growLimit(lastUsable uint64, size int64, lbs int, reserve int64) uint64 {
	if reserve <= 0 {
		return lastUsable
	}
	end := (size - reserve) / (1 << 20) * (1 << 20) // exclusive, in bytes
	if end < int64(lbs) {
		return 0
	}
	return min(lastUsable, uint64(end/int64(lbs))-1)
}
