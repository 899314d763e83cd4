// Package diskimg holds what anvil's image builders share: FAT32
// filesystems (Microsoft FAT specification 1.03) made with go-diskfs and
// checked, and whole-file writes through go-diskfs. go-diskfs v1.9.4 sizes
// the FAT a few entries short for some volume sizes (fsck.fat: "Filesystem
// has 129024 clusters but only space for 129022 FAT entries"; Linux refuses
// to mount it), so every volume made here is read back, checked against the
// specification and shrunk in 32 KiB steps until its FAT maps every
// cluster. agent/image/rootfs has the same check, unexported.
package diskimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// MinSize is the smallest FAT32 volume go-diskfs makes with 512-byte
// clusters that is still FAT32 by the specification's rule (at least
// 65525 clusters, §3.5), rounded up to whole MiB.
const MinSize = 33 << 20

// Geometry is the part of a FAT32 boot sector (§3.1 BPB and §3.3 FAT32
// extended BPB) that decides whether the FAT can map every cluster.
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
// that the volume is FAT32 by its cluster count.
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

// MakeFAT32 creates a FAT32 filesystem labelled label in [start, start+size) of
// store, with logical sectors of sector bytes. reproducible zeroes the
// volume serial number (otherwise taken from the clock), so the same
// inputs give the same bytes. The volume may end up to 224 KiB short of
// size; the slack stays unused.
func MakeFAT32(store backend.Storage, size, start, sector int64, label string, reproducible bool) (*fat32.FileSystem, error) {
	var last error
	for try := int64(0); try < 8; try++ {
		sz := size - try*32<<10
		fsys, err := fat32.Create(store, sz, start, sector, label, reproducible)
		if err != nil {
			return nil, fmt.Errorf("create FAT32 of %d bytes at %d: %w", sz, start, err)
		}
		bs := make([]byte, 512)
		if _, err := store.ReadAt(bs, start); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read back the FAT32 boot sector at %d: %w", start, err)
		}
		g, err := ParseGeometry(bs)
		if err != nil {
			return nil, fmt.Errorf("FAT32 boot sector at %d: %w", start, err)
		}
		if last = g.Check(); last == nil {
			return fsys, nil
		}
	}
	return nil, fmt.Errorf("FAT32 of %d bytes at %d: %w", size, start, last)
}

// FinishFAT32 completes a FAT32 filesystem go-diskfs wrote at start,
// once every file is in place (go-diskfs rewrites whole directories on
// every change, so this comes last). It fixes what go-diskfs v1.9.4 leaves
// that fsck.fat reports, and what makes its output depend on the clock:
//
//   - the volume label entry in the root directory gets the time stamps t
//     (§6: DIR_CrtTimeTenth, DIR_CrtTime, DIR_CrtDate, DIR_LstAccDate,
//     DIR_WrtTime, DIR_WrtDate); go-diskfs stamps it with the clock and
//     offers no way to change it;
//   - the ".." entry of each directory in the root names cluster 0, as
//     §6.7 requires for a parent that is the root (go-diskfs writes the
//     root's cluster, 2);
//   - both FSInfo sectors (§5) get the free cluster count and the next
//     free cluster instead of "unknown" (0xFFFFFFFF).
func FinishFAT32(store backend.Storage, start int64, t time.Time) error {
	v, err := openVolume(store, start)
	if err != nil {
		return err
	}
	root, err := v.readCluster(v.rootCluster)
	if err != nil {
		return err
	}
	tm, dt, tenth := dosTime(t)
	label := false
	for i := 0; i+32 <= len(root); i += 32 {
		e := root[i : i+32]
		if e[0] == 0 {
			break // end of directory
		}
		attr := e[11]
		switch {
		case e[0] == 0xE5 || attr&0x3F == 0x0F:
			// free, or a long name
		case attr&0x08 != 0:
			e[13] = tenth
			binary.LittleEndian.PutUint16(e[14:], tm)
			binary.LittleEndian.PutUint16(e[16:], dt)
			binary.LittleEndian.PutUint16(e[18:], dt)
			binary.LittleEndian.PutUint16(e[22:], tm)
			binary.LittleEndian.PutUint16(e[24:], dt)
			label = true
		case attr&0x10 != 0:
			c := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
			if err := v.fixDotDot(c); err != nil {
				return fmt.Errorf("directory %q: %w", strings.TrimSpace(string(e[:11])), err)
			}
		}
	}
	if !label {
		return fmt.Errorf("FAT32 at %d: no volume label entry in the root directory's first cluster", start)
	}
	if err := v.writeAt(root, v.clusterOffset(v.rootCluster)); err != nil {
		return err
	}
	return v.writeFSInfo()
}

// volume is an open FAT32 filesystem.
type volume struct {
	store                     backend.Storage
	start                     int64
	g                         Geometry
	sector, clusterBytes      int64
	dataStart                 int64
	rootCluster, fsinfoSector uint32
	backupBoot                uint16
}

func openVolume(store backend.Storage, start int64) (*volume, error) {
	bs := make([]byte, 512)
	if _, err := store.ReadAt(bs, start); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read the FAT32 boot sector at %d: %w", start, err)
	}
	g, err := ParseGeometry(bs)
	if err != nil {
		return nil, fmt.Errorf("FAT32 boot sector at %d: %w", start, err)
	}
	if err := g.Check(); err != nil {
		return nil, fmt.Errorf("FAT32 at %d: %w", start, err)
	}
	v := &volume{
		store: store, start: start, g: g,
		sector:       int64(g.BytesPerSector),
		rootCluster:  binary.LittleEndian.Uint32(bs[44:]),         // BPB_RootClus
		fsinfoSector: uint32(binary.LittleEndian.Uint16(bs[48:])), // BPB_FSInfo
		backupBoot:   binary.LittleEndian.Uint16(bs[50:]),         // BPB_BkBootSec
	}
	v.clusterBytes = v.sector * int64(g.SectorsPerCluster)
	v.dataStart = start + (int64(g.Reserved)+int64(g.FATs)*int64(g.FATSectors))*v.sector
	if v.rootCluster < 2 || uint64(v.rootCluster) >= g.Clusters()+2 {
		return nil, fmt.Errorf("FAT32 at %d: root directory cluster %d out of range", start, v.rootCluster)
	}
	return v, nil
}

func (v *volume) clusterOffset(c uint32) int64 { return v.dataStart + int64(c-2)*v.clusterBytes }

func (v *volume) readCluster(c uint32) ([]byte, error) {
	if c < 2 || uint64(c) >= v.g.Clusters()+2 {
		return nil, fmt.Errorf("cluster %d out of range", c)
	}
	b := make([]byte, v.clusterBytes)
	if _, err := v.store.ReadAt(b, v.clusterOffset(c)); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read cluster %d at %d: %w", c, v.clusterOffset(c), err)
	}
	return b, nil
}

func (v *volume) writeAt(b []byte, off int64) error {
	w, err := v.store.Writable()
	if err != nil {
		return err
	}
	if _, err := w.WriteAt(b, off); err != nil {
		return fmt.Errorf("write %d bytes at %d: %w", len(b), off, err)
	}
	return nil
}

// fixDotDot points the ".." entry (the second) of the directory at
// cluster c to cluster 0, its parent being the root.
func (v *volume) fixDotDot(c uint32) error {
	b, err := v.readCluster(c)
	if err != nil {
		return err
	}
	dd := b[32:64]
	if string(dd[:11]) != "..         " || dd[11]&0x10 == 0 {
		return fmt.Errorf("cluster %d: second entry is not \"..\"", c)
	}
	binary.LittleEndian.PutUint16(dd[20:], 0)
	binary.LittleEndian.PutUint16(dd[26:], 0)
	return v.writeAt(dd, v.clusterOffset(c)+32)
}

// writeFSInfo counts the free clusters in the first FAT and records the
// count and the first free cluster in the FSInfo sector and its backup.
func (v *volume) writeFSInfo() error {
	fat := make([]byte, int64(v.g.FATSectors)*v.sector)
	off := v.start + int64(v.g.Reserved)*v.sector
	if _, err := v.store.ReadAt(fat, off); err != nil && err != io.EOF {
		return fmt.Errorf("read the FAT at %d: %w", off, err)
	}
	var free, next uint32 = 0, 0xFFFFFFFF
	for c := uint64(2); c < v.g.Clusters()+2; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0FFFFFFF == 0 {
			free++
			if next == 0xFFFFFFFF {
				next = uint32(c)
			}
		}
	}
	for _, sec := range []int64{int64(v.fsinfoSector), int64(v.backupBoot) + int64(v.fsinfoSector)} {
		b := make([]byte, 512)
		at := v.start + sec*v.sector
		if _, err := v.store.ReadAt(b, at); err != nil && err != io.EOF {
			return fmt.Errorf("read FSInfo at %d: %w", at, err)
		}
		if binary.LittleEndian.Uint32(b[0:]) != 0x41615252 || binary.LittleEndian.Uint32(b[484:]) != 0x61417272 {
			return fmt.Errorf("no FSInfo signature at sector %d", sec)
		}
		binary.LittleEndian.PutUint32(b[488:], free) // FSI_Free_Count
		binary.LittleEndian.PutUint32(b[492:], next) // FSI_Nxt_Free
		if err := v.writeAt(b, at); err != nil {
			return fmt.Errorf("FSInfo: %w", err)
		}
	}
	return nil
}

// dosTime encodes t (UTC) as a FAT time, date and creation tenths (§6.1).
// Dates before 1980 are clamped to 1980-01-01.
func dosTime(t time.Time) (tm, dt uint16, tenth uint8) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	dt = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tenth = uint8(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return tm, dt, tenth
}
