// Package diskimg holds what anvil's image builders share: FAT32
// filesystems (Microsoft FAT specification 1.03) made with go-diskfs —
// created through agent/image/fatfs, whose geometry check works around
// go-diskfs v1.9.4 sizing the FAT short — and finished so fsck.fat finds
// nothing and the bytes do not depend on the clock (FinishFAT32), and
// whole-file writes through go-diskfs.
package diskimg

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/anvil-metal/anvil/agent/image/fatfs"
)

// MinSize is the smallest FAT32 volume go-diskfs makes with 512-byte
// clusters that is still FAT32 by the specification's rule (at least
// 65525 clusters, §3.5), rounded up to whole MiB.
const MinSize = 33 << 20

// MakeFAT32 creates a FAT32 filesystem with a checked geometry
// (agent/image/fatfs.Create; the volume may end up to 224 KiB short of
// size).
func MakeFAT32(store backend.Storage, size, start, sector int64, label string, reproducible bool) (*fat32.FileSystem, error) {
	return fatfs.Create(store, size, start, sector, label, reproducible)
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
	g                         fatfs.Geometry
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
	g, err := fatfs.ParseGeometry(bs)
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
