// Package growpart fits a written disk image's GUID Partition Table (UEFI
// 2.10 §5.3) to the disk it was written on. An image is usually smaller than
// the disk: its backup GPT header sits at the image's end, not the disk's,
// and its root partition ends early. Grow moves the backup header and the
// backup partition array to the last LBAs of the disk, raises the usable
// range to match, and extends the last partition to the end when it is a
// Linux root or data partition. The filesystem inside is not resized here;
// cloud-init's resize_rootfs (or the image's own first-boot unit) does that.
package growpart

import (
	"fmt"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
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

// Plan decides whether the partition that ends last can grow to lastUsable
// (the disk's last usable LBA after the backup GPT moved).
func Plan(parts []Part, lastUsable uint64) Decision {
	var last *Part
	for i := range parts {
		if last == nil || parts[i].End > last.End {
			last = &parts[i]
		}
	}
	switch {
	case last == nil:
		return Decision{Reason: "no partition"}
	case last.End >= lastUsable:
		return Decision{Index: last.Index, Reason: fmt.Sprintf("partition %d already ends at the disk's last usable block", last.Index)}
	}
	name, ok := growable[strings.ToUpper(last.Type)]
	if !ok {
		return Decision{Index: last.Index, Reason: fmt.Sprintf("last partition %d has type %s, not a Linux root or data partition", last.Index, last.Type)}
	}
	return Decision{Grow: true, Index: last.Index, NewEnd: lastUsable,
		Reason: fmt.Sprintf("partition %d (%s) grown from block %d to %d", last.Index, name, last.End, lastUsable)}
}

// Result says what Grow did.
type Result struct {
	// GPT is false for a disk without a GPT (nothing to do).
	GPT bool
	// Moved is true when the backup GPT was moved to the disk's end.
	Moved bool
	Decision
}

// Grow fits the GPT on the device or file at path (size bytes, logical
// block size lbs) to the whole device.
func Grow(path string, size int64, lbs int) (Result, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	t, err := gpt.Read(f, lbs, lbs)
	if err != nil {
		return Result{Decision: Decision{Reason: "no GPT: " + err.Error()}}, nil
	}
	res := Result{GPT: true}
	if t.TotalSize() != uint64(size) {
		t.Resize(uint64(size))
		res.Moved = true
	}
	var parts []Part
	byIndex := map[int]*gpt.Partition{}
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		byIndex[p.Index] = p
		parts = append(parts, Part{Index: p.Index, Start: p.Start, End: p.End, Type: string(p.Type)})
	}
	res.Decision = Plan(parts, t.LastDataSector())
	if res.Grow {
		p := byIndex[res.Index]
		p.End = res.NewEnd
		p.Size = (p.End - p.Start + 1) * uint64(lbs)
	}
	if !res.Moved && !res.Grow {
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
