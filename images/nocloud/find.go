package nocloud

import (
	"fmt"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Found is a seed and where it was.
type Found struct {
	Seed Seed
	// Device is the disk (block device or image file) it is on;
	// Partition its partition number, 0 for a filesystem on the whole
	// disk.
	Device    string
	Partition int
	// Mark is what identified it ("GPT partition name cidata", ...).
	Mark string
}

func (f Found) String() string {
	if f.Partition == 0 {
		return fmt.Sprintf("%s (whole disk, %s)", f.Device, f.Mark)
	}
	return fmt.Sprintf("%s partition %d (%s)", f.Device, f.Partition, f.Mark)
}

// Find looks for a seed on the disks at paths (block devices or image
// files), in order, read-only: a partition named "cidata" or a filesystem
// labelled "CIDATA", on a partition or on the whole disk. Disks that cannot
// be opened are passed over (a CD drive without a medium); the error then
// wraps ErrNotFound with the reasons. A seed that is found but unreadable
// is an error of its own.
func Find(paths []string) (Found, error) {
	var why []string
	for _, p := range paths {
		f, ok, err := findOn(p)
		if err != nil {
			return Found{}, err
		}
		if ok {
			return f, nil
		}
		if f.Mark != "" {
			why = append(why, f.Mark)
		}
	}
	if len(why) == 0 {
		return Found{}, fmt.Errorf("%w on %s", ErrNotFound, strings.Join(paths, ", "))
	}
	return Found{}, fmt.Errorf("%w on %s (%s)", ErrNotFound, strings.Join(paths, ", "), strings.Join(why, "; "))
}

// findOn looks at one disk. With ok false, Found.Mark says why the disk
// was passed over, if it could not be read.
func findOn(path string) (Found, bool, error) {
	if err := gptread.CheckFile(path); err != nil {
		return Found{Mark: err.Error()}, false, nil // passed over, like a disk that does not open
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return Found{Mark: fmt.Sprintf("%s: %v", path, err)}, false, nil
	}
	defer d.Close()
	t, err := d.GetPartitionTable()
	if err != nil || t == nil {
		// No partition table: a filesystem on the whole disk (a seed
		// image attached as a disk of its own) or nothing.
		return check(d, path, 0, "")
	}
	for i, p := range t.GetPartitions() {
		var name string
		if gp, ok := p.(*gpt.Partition); ok {
			if gp.Type == gpt.Unused {
				continue
			}
			name = gp.Name
		}
		f, ok, err := check(d, path, i+1, name)
		if err != nil || ok {
			return f, ok, err
		}
	}
	if _, isGPT := t.(*gpt.Table); !isGPT {
		// A FAT boot sector ends in 55 AA like an MBR, so go-diskfs
		// reads a whole-disk FAT filesystem as an MBR of nonsense.
		return check(d, path, 0, "")
	}
	return Found{}, false, nil
}

// check reads partition index (0: the whole disk) when it carries a
// seed's mark.
func check(d *disk.Disk, path string, index int, name string) (Found, bool, error) {
	fsys, err := d.GetFilesystem(index)
	if err != nil {
		if _, named := isSeed(name, ""); named {
			return Found{}, false, fmt.Errorf("%s partition %d is named %q but holds no readable filesystem: %w", path, index, name, err)
		}
		return Found{}, false, nil
	}
	mark, ok := isSeed(name, fsys.Label())
	if !ok {
		return Found{}, false, nil
	}
	s, err := ReadFS(fsys)
	if err != nil {
		return Found{}, false, fmt.Errorf("seed on %s partition %d (%s): %w", path, index, mark, err)
	}
	return Found{Seed: s, Device: path, Partition: index, Mark: mark}, true, nil
}
