package nocloud

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/images/internal/diskimg"
)

// ErrNoGPT is a disk image without a usable GUID Partition Table: none
// (the error also wraps gptread.ErrNoGPT) or one that cannot be read
// (gptread.ErrUnreadable).
var ErrNoGPT = errors.New("no GUID Partition Table")

// AppendOptions configure Append.
type AppendOptions struct {
	// Size is the seed partition's size in bytes (default and minimum:
	// the smallest FAT32 volume, 33 MiB).
	Size int64
	// GUID is the seed partition's unique GUID (default: random).
	GUID string
	// Time stamps the seed's files (default: now).
	Time time.Time
}

// Append grows the disk image at path (a regular file with a GUID
// Partition Table, 512-byte sectors) and adds the seed as a last
// partition: GPT name "cidata", type Microsoft basic data, 1 MiB aligned
// after the last partition, FAT32 labelled "CIDATA", then a free MiB for
// the backup GPT, which moves to the new end. It returns the partition's
// number.
func Append(imagePath string, s Seed, o AppendOptions) (int, error) {
	files, err := s.Files()
	if err != nil {
		return 0, err
	}
	size := max(o.Size, diskimg.MinSize)
	size = (size + align - 1) / align * align
	f, err := os.OpenFile(imagePath, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", imagePath, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", imagePath, err)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", imagePath)
	}
	t, err := gptread.Read(f, st.Size(), sector)
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %w", imagePath, ErrNoGPT, err)
	}
	store := file.New(f, false)
	var lastEnd uint64
	index := 0
	t.Partitions = slices.DeleteFunc(t.Partitions, func(p *gpt.Partition) bool { return p.Type == gpt.Unused })
	for _, p := range t.Partitions {
		if _, named := isSeed(p.Name, ""); named {
			return 0, fmt.Errorf("%s already has a seed: partition %d is named %q", imagePath, p.Index, p.Name)
		}
		lastEnd = max(lastEnd, p.End)
		index = max(index, p.Index)
	}
	start := ((int64(lastEnd)+1)*sector + align - 1) / align * align
	newSize := start + size + align

	// The old backup GPT (array and header, the last 33 sectors) would
	// otherwise stay behind inside the new partition.
	old := st.Size() / sector * sector
	if tail := int64(33 * sector); old >= tail {
		if _, err := f.WriteAt(make([]byte, tail), old-tail); err != nil {
			return 0, fmt.Errorf("clear the old backup GPT of %s: %w", imagePath, err)
		}
	}
	if err := f.Truncate(newSize); err != nil {
		return 0, fmt.Errorf("grow %s to %d bytes: %w", imagePath, newSize, err)
	}
	t.Resize(uint64(newSize))
	p := &gpt.Partition{
		Index: index + 1, Start: uint64(start / sector), End: uint64((start+size)/sector - 1), Size: uint64(size),
		Type: gpt.MicrosoftBasicData, Name: PartitionName, GUID: o.GUID,
	}
	t.Partitions = append(t.Partitions, p)
	w, err := store.Writable()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", imagePath, err)
	}
	if err := t.Write(w, newSize); err != nil {
		return 0, fmt.Errorf("write the GPT of %s: %w", imagePath, err)
	}
	fsys, err := diskimg.MakeFAT32(store, size, start, sector, Label, true)
	if err != nil {
		return 0, fmt.Errorf("seed filesystem on %s partition %d: %w", imagePath, p.Index, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	stamp := o.Time
	if stamp.IsZero() {
		stamp = time.Now()
	}
	stamped := map[string]bool{}
	for _, n := range names {
		if err := diskimg.WriteFile(fsys, n, files[n]); err != nil {
			return 0, fmt.Errorf("seed on %s: %w", imagePath, err)
		}
		for p := n; p != "."; p = path.Dir(p) {
			stamped[p] = true
			if p != n {
				stamped[p+"/."], stamped[p+"/.."] = true, true
			}
		}
	}
	for p := range stamped {
		if err := fsys.Chtimes(p, stamp, stamp, stamp); err != nil {
			return 0, fmt.Errorf("seed on %s: set times of %s: %w", imagePath, p, err)
		}
	}
	if err := diskimg.FinishFAT32(store, start, stamp); err != nil {
		return 0, fmt.Errorf("seed on %s: %w", imagePath, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", imagePath, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", imagePath, err)
	}
	return p.Index, nil
}

const (
	sector = 512
	align  = 1 << 20
)
