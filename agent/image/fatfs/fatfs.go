// Package fatfs makes FAT32 filesystems with go-diskfs whose geometry is
// checked against the Microsoft FAT specification 1.03 (§3.1 BPB, §3.3
// FAT32 extended BPB, §3.5 FAT size). go-diskfs v1.9.4 sizes the FAT a few
// entries short for some volume sizes; Create detects that and shrinks the
// volume until the FAT maps every cluster. The ESP of a rootfs install
// (agent/image/rootfs), the NoCloud seed (agent/seed) and the FAT volumes
// of the images (images/internal/diskimg) are made here.
package fatfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// Geometry is the part of a FAT32 boot sector that decides whether the FAT
// can map every cluster.
type Geometry struct {
	BytesPerSector    uint16 // BPB_BytsPerSec, offset 11
	SectorsPerCluster uint8  // BPB_SecPerClus, offset 13
	Reserved          uint16 // BPB_RsvdSecCnt, offset 14
	FATs              uint8  // BPB_NumFATs, offset 16
	TotalSectors      uint32 // BPB_TotSec32, offset 32
	FATSectors        uint32 // BPB_FATSz32, offset 36
}

// ParseGeometry reads the geometry from a boot sector.
func ParseGeometry(bs []byte) (Geometry, error) {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
		return Geometry{}, errors.New("no boot sector signature 55 AA")
	}
	return Geometry{
		BytesPerSector:    binary.LittleEndian.Uint16(bs[11:]),
		SectorsPerCluster: bs[13],
		Reserved:          binary.LittleEndian.Uint16(bs[14:]),
		FATs:              bs[16],
		TotalSectors:      binary.LittleEndian.Uint32(bs[32:]),
		FATSectors:        binary.LittleEndian.Uint32(bs[36:]),
	}, nil
}

// Clusters is the number of data clusters.
func (g Geometry) Clusters() uint64 {
	meta := uint64(g.Reserved) + uint64(g.FATs)*uint64(g.FATSectors)
	if g.SectorsPerCluster == 0 || meta >= uint64(g.TotalSectors) {
		return 0
	}
	return (uint64(g.TotalSectors) - meta) / uint64(g.SectorsPerCluster)
}

// Check verifies the FAT has an entry for every data cluster (§3.5: the
// count of clusters plus the two reserved entries must fit in FATSz32) and
// that the volume is FAT32 by its cluster count (at least 65525).
func (g Geometry) Check() error {
	if g.BytesPerSector == 0 || g.SectorsPerCluster == 0 || g.FATs == 0 {
		return fmt.Errorf("boot sector has zero geometry fields: %+v", g)
	}
	meta := uint64(g.Reserved) + uint64(g.FATs)*uint64(g.FATSectors)
	if meta >= uint64(g.TotalSectors) {
		return fmt.Errorf("FATs of %d sectors fill the %d-sector volume", g.FATSectors, g.TotalSectors)
	}
	clusters := g.Clusters()
	entries := uint64(g.FATSectors)*uint64(g.BytesPerSector)/4 - 2
	if clusters > entries {
		return fmt.Errorf("%d clusters but the FAT maps only %d", clusters, entries)
	}
	if clusters < 65525 {
		return fmt.Errorf("%d clusters: a FAT32 volume needs at least 65525", clusters)
	}
	return nil
}

// Create makes a FAT32 filesystem labelled label in [start, start+size) of
// store (sector: the logical sector size) whose FAT covers every cluster.
// When go-diskfs sizes the FAT short (fsck.fat: "Filesystem has 129024
// clusters but only space for 129022 FAT entries", Linux refuses to mount
// it), the volume is shrunk by 32 KiB steps until it is right; the slack
// stays unused at the partition's end.
// reproducible zeroes the volume serial number (otherwise taken from the
// clock), so the same inputs give the same bytes.
func Create(store backend.Storage, size, start, sector int64, label string, reproducible bool) (*fat32.FileSystem, error) {
	var last error
	for try := int64(0); try < 8; try++ {
		sz := size - try*32<<10
		fsys, err := fat32.Create(store, sz, start, sector, label, reproducible)
		if err != nil {
			return nil, fmt.Errorf("FAT32 of %d bytes at byte %d: %w", sz, start, err)
		}
		bs := make([]byte, 512)
		if _, err := store.ReadAt(bs, start); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read back the FAT32 boot sector at byte %d: %w", start, err)
		}
		g, err := ParseGeometry(bs)
		if err != nil {
			return nil, fmt.Errorf("FAT32 boot sector at byte %d: %w", start, err)
		}
		if last = g.Check(); last == nil {
			return fsys, nil
		}
	}
	return nil, fmt.Errorf("FAT32 of %d bytes: %w", size, last)
}
