package rootfs

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// fatGeometry is the part of a FAT32 boot sector (Microsoft FAT
// specification 1.03, §3.1 BPB and §3.3 FAT32 extended BPB) that decides
// whether the FAT can map every cluster.
type fatGeometry struct {
	bytesPerSector    uint16 // BPB_BytsPerSec, offset 11
	sectorsPerCluster uint8  // BPB_SecPerClus, offset 13
	reserved          uint16 // BPB_RsvdSecCnt, offset 14
	fats              uint8  // BPB_NumFATs, offset 16
	totalSectors      uint32 // BPB_TotSec32, offset 32
	fatSectors        uint32 // BPB_FATSz32, offset 36
}

func parseFATGeometry(bs []byte) (fatGeometry, error) {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
		return fatGeometry{}, fmt.Errorf("no boot sector signature 55 AA")
	}
	return fatGeometry{
		bytesPerSector:    binary.LittleEndian.Uint16(bs[11:]),
		sectorsPerCluster: bs[13],
		reserved:          binary.LittleEndian.Uint16(bs[14:]),
		fats:              bs[16],
		totalSectors:      binary.LittleEndian.Uint32(bs[32:]),
		fatSectors:        binary.LittleEndian.Uint32(bs[36:]),
	}, nil
}

// check verifies the FAT has an entry for every data cluster (§3.5: the
// count of clusters plus the two reserved entries must fit in FATSz32).
func (g fatGeometry) check() error {
	if g.bytesPerSector == 0 || g.sectorsPerCluster == 0 || g.fats == 0 {
		return fmt.Errorf("boot sector has zero geometry fields: %+v", g)
	}
	meta := uint64(g.reserved) + uint64(g.fats)*uint64(g.fatSectors)
	if meta >= uint64(g.totalSectors) {
		return fmt.Errorf("FATs of %d sectors fill the %d-sector volume", g.fatSectors, g.totalSectors)
	}
	clusters := (uint64(g.totalSectors) - meta) / uint64(g.sectorsPerCluster)
	entries := uint64(g.fatSectors)*uint64(g.bytesPerSector)/4 - 2
	if clusters > entries {
		return fmt.Errorf("%d clusters but the FAT maps only %d", clusters, entries)
	}
	return nil
}

// makeFAT32 creates a FAT32 filesystem in [start, start+size) whose FAT
// covers every cluster. go-diskfs v1.9.4 sizes the FAT a few entries short
// for some volume sizes (fsck.fat: "Filesystem has 129024 clusters but
// only space for 129022 FAT entries", Linux refuses to mount it), so the
// result is checked and the volume shrunk by 32 KiB steps until it is
// right; the slack stays unused at the partition's end.
func makeFAT32(store backend.Storage, size, start, sector int64, label string) (*fat32.FileSystem, error) {
	var last error
	for try := int64(0); try < 8; try++ {
		sz := size - try*32<<10
		fsys, err := fat32.Create(store, sz, start, sector, label, false)
		if err != nil {
			return nil, err
		}
		bs := make([]byte, 512)
		if _, err := store.ReadAt(bs, start); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read back the FAT32 boot sector: %w", err)
		}
		g, err := parseFATGeometry(bs)
		if err != nil {
			return nil, fmt.Errorf("FAT32 boot sector: %w", err)
		}
		if last = g.check(); last == nil {
			return fsys, nil
		}
	}
	return nil, fmt.Errorf("FAT32 of %d bytes: %w", size, last)
}
