package erase

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// ErrPartitionTable is a partition table that cannot be read: a quick
// erase does not guess where its partitions are.
var ErrPartitionTable = errors.New("unreadable partition table")

// MBR layout (UEFI 2.10 §5.2.1): four 16-byte entries from byte 446, the
// signature 55h AAh at 510.
const (
	mbrEntries   = 446
	mbrEntrySize = 16
	typeGPT      = 0xee
	maxLogical   = 256 // extended boot records followed before giving up
)

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// ReadPartitions returns the partitions of a device of size bytes with
// logical blocks of lbs bytes. A protective MBR (an entry of type EEh), or
// a GPT header ("EFI PART") at LBA 1 or, with LBA 0 blank, in the last LBA,
// means GPT, read by go-diskfs (primary, else backup); otherwise an MBR
// with its extended partitions' logical ones. No partition table is no
// partition. An MBR whose boot indicators are not 00h/80h is a boot sector
// (FAT, NTFS), not a table, as libblkid decides. A table that says GPT but
// cannot be read, a broken extended chain, or a partition past the end of
// the device is ErrPartitionTable.
func ReadPartitions(f backend.File, size, lbs int64) ([]Partition, error) {
	if lbs < 512 || lbs&(lbs-1) != 0 {
		return nil, fmt.Errorf("read partition table: logical block size %d", lbs)
	}
	if size < 2*lbs {
		return nil, nil
	}
	sec0 := make([]byte, 512)
	if _, err := f.ReadAt(sec0, 0); err != nil {
		return nil, fmt.Errorf("read partition table: MBR: %w", err)
	}
	hasMBR := sec0[510] == 0x55 && sec0[511] == 0xaa
	protective := false
	if hasMBR {
		for i := range 4 {
			if sec0[mbrEntries+i*mbrEntrySize+4] == typeGPT {
				protective = true
			}
		}
	}
	primary, err := hasSignature(f, lbs, "EFI PART")
	if err != nil {
		return nil, err
	}
	backupOnly := false
	if !hasMBR && !primary {
		if backupOnly, err = hasSignature(f, size/lbs*lbs-lbs, "EFI PART"); err != nil {
			return nil, err
		}
	}
	if protective || primary || backupOnly {
		return readGPT(f, size, lbs)
	}
	if !hasMBR {
		return nil, nil
	}
	for i := range 4 {
		if b := sec0[mbrEntries+i*mbrEntrySize]; b != 0 && b != 0x80 {
			return nil, nil // a boot sector, not a partition table
		}
	}
	return readMBR(f, sec0, size, lbs)
}

func hasSignature(f io.ReaderAt, off int64, sig string) (bool, error) {
	b := make([]byte, len(sig))
	if _, err := f.ReadAt(b, off); err != nil {
		return false, fmt.Errorf("read partition table: %d bytes at %d: %w", len(b), off, err)
	}
	return string(b) == sig, nil
}

// maxEntryArray bounds a GPT's partition entry array (UEFI requires at
// least 16 KiB; 128 entries of 128 bytes is the common size): the reader
// allocates what a header asks for, and the header is untrusted data.
const maxEntryArray = 4 << 20

// checkEntryArrays refuses a GPT header (primary at LBA 1, backup in the
// last LBA) whose entry array is larger than maxEntryArray or whose entries
// are smaller than the 128 bytes UEFI requires.
func checkEntryArrays(f io.ReaderAt, size, lbs int64) error {
	for _, off := range []int64{lbs, size/lbs*lbs - lbs} {
		h := make([]byte, 92)
		if _, err := f.ReadAt(h, off); err != nil {
			return fmt.Errorf("read partition table: GPT header at %d: %w", off, err)
		}
		if string(h[:8]) != "EFI PART" {
			continue
		}
		n, sz := int64(binary.LittleEndian.Uint32(h[80:])), int64(binary.LittleEndian.Uint32(h[84:]))
		if sz < 128 || n*sz > maxEntryArray {
			return fmt.Errorf("%w: GPT header at %d declares %d entries of %d bytes", ErrPartitionTable, off, n, sz)
		}
	}
	return nil
}

func readGPT(f backend.File, size, lbs int64) ([]Partition, error) {
	if err := checkEntryArrays(f, size, lbs); err != nil {
		return nil, err
	}
	t, err := gpt.Read(f, int(lbs), int(lbs))
	if err != nil {
		return nil, fmt.Errorf("%w: GPT (%d-byte blocks): %w", ErrPartitionTable, lbs, err)
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
