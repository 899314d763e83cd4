// Package gpttest forges GPT headers for tests: a field rewritten and the
// header's CRC32 fixed, as a forged (or buggy) disk would carry it (UEFI
// 2.10 §5.3.2, the GPT header layout).
package gpttest

import (
	"encoding/binary"
	"hash/crc32"
)

// Header field offsets.
const (
	EntryCount = 80
	EntrySize  = 84
)

// SetField rewrites the 32-bit field of the GPT header at byte off of disk
// and fixes the header's CRC.
func SetField(disk []byte, off, field int, v uint32) {
	h := disk[off : off+92]
	binary.LittleEndian.PutUint32(h[field:], v)
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}

// HugeEntries makes both headers of a disk of size bytes with 512-byte
// blocks (primary at 512, backup in the last block) declare 2^32-1 entries
// of 2^32-1 bytes: a size whose product overflows.
func HugeEntries(disk []byte, size int) {
	for _, off := range []int{512, size - 512} {
		SetField(disk, off, EntryCount, 0xffffffff)
		SetField(disk, off, EntrySize, 0xffffffff)
	}
}
