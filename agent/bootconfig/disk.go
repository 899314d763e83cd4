package bootconfig

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
)

// disk is an open disk image or block device with its filesystems.
type openDisk struct {
	d     *disk.Disk
	parts []Partition
}

func open(path string) (*openDisk, error) {
	if err := gptread.CheckFile(path); err != nil {
		return nil, err
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	t, err := d.GetPartitionTable()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("partition table of %s: %w", path, err)
	}
	od := &openDisk{d: d}
	for i := range t.GetPartitions() {
		fsys, err := d.GetFilesystem(i + 1)
		if err != nil {
			continue // swap, LVM, an unknown filesystem: nothing to read
		}
		od.parts = append(od.parts, Partition{Index: i + 1, FS: fsys})
	}
	return od, nil
}

// Lookup finds the boot configuration on the disk (image file or block
// device) at path, read-only.
func Lookup(path string) (Boot, error) {
	od, err := open(path)
	if err != nil {
		return Boot{}, err
	}
	defer od.d.Close()
	if len(od.parts) == 0 {
		return Boot{}, fmt.Errorf("%w: %s has no FAT or ext4 partition", ErrNotFound, path)
	}
	return Find(od.parts)
}

// ReadFile returns the bytes of a file Lookup found (a kernel or initrd to
// hand to kexec_file_load).
func ReadFile(path string, ref FileRef) ([]byte, error) {
	od, err := open(path)
	if err != nil {
		return nil, err
	}
	defer od.d.Close()
	for _, p := range od.parts {
		if p.Index == ref.Partition {
			b, err := fs.ReadFile(p.FS, ref.Path)
			if err != nil {
				return nil, fmt.Errorf("read %s on %s: %w", ref, path, err)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("read %s on %s: %w", ref, path, errors.New("no such partition"))
}
