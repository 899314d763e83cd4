package erase

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
)

// ErrPartitionTable is a partition table that cannot be read: a quick
// erase does not guess where its partitions are.
var ErrPartitionTable = errors.New("unreadable partition table")

// MBR layout (UEFI 2.10 §5.2.1): four 16-byte entries from byte 446, the
// signature 55h AAh at 510.
const (
	mbrEntries   = 446
	mbrEntrySize = 16
	maxLogical   = 256 // extended boot records followed before giving up
)

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// ReadPartitions returns the partitions of a device of size bytes with
// logical blocks of lbs bytes. A device with a GPT (as agent/disks/gptread
// decides: a protective MBR, a GPT header at LBA 1, or one in the last LBA
// with LBA 0 holding no MBR) is read through gptread (primary, else
// backup); otherwise an MBR with its extended partitions' logical ones. No
// partition table is no partition. An MBR whose boot indicators are not
// 00h/80h is a boot sector (FAT, NTFS), not a table, as libblkid decides. A
// GPT that cannot be read, a broken extended chain, or a partition past the
// end of the device is ErrPartitionTable.
func ReadPartitions(f io.ReaderAt, size, lbs int64) ([]Partition, error) {
	if lbs < 512 || lbs > 1<<16 || lbs&(lbs-1) != 0 {
		return nil, fmt.Errorf("read partition table: logical block size %d", lbs)
	}
	if size < 2*lbs {
		return nil, nil
	}
	sec0 := make([]byte, 512)
	if _, err := f.ReadAt(sec0, 0); err != nil {
		return nil, fmt.Errorf("read partition table: MBR: %w", err)
	}
	signs, err := gptread.Probe(f, size, int(lbs))
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	if signs.Present() {
		return readGPT(f, size, lbs)
	}
	if !signs.MBR {
		return nil, nil
	}
	for i := range 4 {
		if b := sec0[mbrEntries+i*mbrEntrySize]; b != 0 && b != 0x80 {
			return nil, nil // a boot sector, not a partition table
		}
	}
	return readMBR(f, sec0, size, lbs)
}

func readGPT(f io.ReaderAt, size, lbs int64) ([]Partition, error) {
	t, err := gptread.Read(f, size, int(lbs))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPartitionTable, err)
	}
	var out []Partition
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		if p.End < p.Start {
			return nil, fmt.Errorf("%w: GPT partition %d ends (LBA %d) before it starts (LBA %d)", ErrPartitionTable, p.Index, p.End, p.Start)
		}
		part := Partition{Off: int64(p.Start) * lbs, Len: int64(p.End-p.Start+1) * lbs}
		if err := inside(part, size, fmt.Sprintf("GPT partition %d", p.Index)); err != nil {
			return nil, err
		}
		out = append(out, part)
	}
	return out, nil
}

func inside(p Partition, size int64, what string) error {
	if p.Off < 0 || p.Len <= 0 || p.Off+p.Len > size || p.Off+p.Len < p.Off {
		return fmt.Errorf("%w: %s [%d,%d) lies outside the %d-byte device", ErrPartitionTable, what, p.Off, p.Off+p.Len, size)
	}
	return nil
}

type mbrEntry struct {
	typ         byte
	start, size uint32 // in logical blocks
}

func mbrEntryAt(sector []byte, i int) mbrEntry {
	e := sector[mbrEntries+i*mbrEntrySize:]
	return mbrEntry{typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), size: binary.LittleEndian.Uint32(e[12:])}
}

// readMBR returns the primary partitions and the logical ones of the
// extended partition (each extended boot record: the logical partition
// relative to the record, the next record relative to the extended
// partition's start).
func readMBR(f io.ReaderAt, sec0 []byte, size, lbs int64) ([]Partition, error) {
	var out []Partition
	for i := range 4 {
		e := mbrEntryAt(sec0, i)
		if e.typ == 0 || e.size == 0 {
			continue
		}
		ext := Partition{Off: int64(e.start) * lbs, Len: int64(e.size) * lbs}
		if err := inside(ext, size, fmt.Sprintf("MBR partition %d", i+1)); err != nil {
			return nil, err
		}
		if !isExtended(e.typ) {
			out = append(out, ext)
			continue
		}
		logical, err := readEBRs(f, ext, size, lbs)
		if err != nil {
			return nil, err
		}
		out = append(out, logical...)
	}
	return out, nil
}

func readEBRs(f io.ReaderAt, ext Partition, size, lbs int64) ([]Partition, error) {
	var out []Partition
	seen := map[int64]bool{}
	ebr := ext.Off
	sec := make([]byte, 512)
	for n := 0; ; n++ {
		if n == maxLogical || seen[ebr] {
			return nil, fmt.Errorf("%w: the extended partition's chain of boot records loops or passes %d records", ErrPartitionTable, maxLogical)
		}
		seen[ebr] = true
		if _, err := f.ReadAt(sec, ebr); err != nil {
			return nil, fmt.Errorf("read partition table: extended boot record at %d: %w", ebr, err)
		}
		if sec[510] != 0x55 || sec[511] != 0xaa {
			return nil, fmt.Errorf("%w: extended boot record at %d has no 55AA signature", ErrPartitionTable, ebr)
		}
		if l := mbrEntryAt(sec, 0); l.typ != 0 && l.size != 0 {
			p := Partition{Off: ebr + int64(l.start)*lbs, Len: int64(l.size) * lbs}
			if err := inside(p, size, fmt.Sprintf("logical partition %d", len(out)+5)); err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		next := mbrEntryAt(sec, 1)
		if next.typ == 0 || next.start == 0 {
			return out, nil
		}
		ebr = ext.Off + int64(next.start)*lbs
		if ebr >= ext.Off+ext.Len {
			return nil, fmt.Errorf("%w: extended boot record at %d lies past the extended partition [%d,%d)", ErrPartitionTable, ebr, ext.Off, ext.Off+ext.Len)
		}
	}
}
