package seed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/anvil-metal/anvil/agent/blockdev"
	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/agent/image/fatfs"
)

// Result says what Write did.
type Result struct {
	Partition Extent
	// Sector is the disk's logical block size.
	Sector int64
	// GUID is the seed partition's unique GUID.
	GUID string
	// Replaced are the numbers of earlier seed partitions removed.
	Replaced []int
	// Files are the names written.
	Files []string
}

// String is the one-line summary for the install event.
func (r Result) String() string {
	s := fmt.Sprintf("NoCloud seed p%d %q %d MiB FAT32 %s at MiB %d: %s", r.Partition.Index, PartName,
		Size>>20, Label, int64(r.Partition.Start)*r.Sector>>20, strings.Join(r.Files, ", "))
	if len(r.Replaced) > 0 {
		s += fmt.Sprintf("; replaced the earlier seed partition %v", r.Replaced)
	}
	return s
}

// Write adds the seed partition to the GPT of target (a whole disk, or an
// image file), replacing any partition named PartName, and writes the
// seed's files onto a fresh FAT32 in it. On error the target may be left
// half-changed; the caller destroys the partition tables, as for any
// failed install.
func Write(ctx context.Context, target string, c Config) (res Result, err error) {
	files, err := Files(c)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	dev, err := blockdev.OpenBuffered(target, os.O_RDWR)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := dev.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", target, cerr)
		}
	}()
	res.Sector = dev.LogicalBlock
	lbs := int(dev.LogicalBlock)
	t, err := gptread.Read(dev.File, dev.Size, lbs)
	if err != nil {
		return res, fmt.Errorf("%w on %s: %w", ErrNoGPT, target, err)
	}
	if t.TotalSize() != uint64(dev.Size) {
		// An image whose backup GPT is not at the disk's end (nothing
		// grew it): the seed goes at the disk's end all the same.
		t.Resize(uint64(dev.Size))
	}
	var kept []*gpt.Partition
	var parts []Extent
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		if p.Name == PartName {
			res.Replaced = append(res.Replaced, p.Index)
			continue
		}
		kept = append(kept, p)
		parts = append(parts, Extent{Index: p.Index, Start: p.Start, End: p.End})
	}
	if res.Partition, err = Place(parts, t.LastDataSector(), dev.LogicalBlock); err != nil {
		return res, fmt.Errorf("seed on %s: %w", target, err)
	}
	e := res.Partition
	res.GUID = strings.ToUpper(uuid.NewString())
	t.Partitions = append(kept, &gpt.Partition{Index: e.Index, Start: e.Start, End: e.End,
		Size: (e.End - e.Start + 1) * uint64(lbs), Type: gpt.MicrosoftBasicData, Name: PartName, GUID: res.GUID})
	store := file.New(dev.File, false)
	w, err := store.Writable()
	if err != nil {
		return res, fmt.Errorf("seed on %s: %w", target, err)
	}
	if err := t.Write(w, dev.Size); err != nil {
		return res, fmt.Errorf("write GPT with the seed partition on %s: %w", target, err)
	}
	fsys, err := fatfs.Create(store, Size, int64(e.Start)*dev.LogicalBlock, dev.LogicalBlock, Label, false)
	if err != nil {
		return res, fmt.Errorf("seed filesystem on %s p%d: %w", target, e.Index, err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := writeFile(fsys, f); err != nil {
			return res, fmt.Errorf("seed on %s p%d: %w", target, e.Index, err)
		}
		res.Files = append(res.Files, f.Name)
	}
	if err := dev.Sync(); err != nil {
		return res, err
	}
	if err := dev.RereadPartitions(); err != nil {
		return res, err
	}
	return res, nil
}

func writeFile(fsys filesystem.FileSystem, f File) error {
	p := "/" + f.Name
	if dir := path.Dir(p); dir != "/" {
		if err := fsys.Mkdir(dir); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
	}
	fh, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	n, err := io.Copy(fh, bytes.NewReader(f.Data))
	if err == nil && n != int64(len(f.Data)) {
		err = fmt.Errorf("wrote %d of %d bytes", n, len(f.Data))
	}
	if cerr := fh.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// Writer adapts Write to a summary-returning step (agent/executor's Seed).
func Writer() func(ctx context.Context, target string, c Config) (string, error) {
	return func(ctx context.Context, target string, c Config) (string, error) {
		res, err := Write(ctx, target, c)
		if err != nil {
			return "", err
		}
		return res.String(), nil
	}
}
