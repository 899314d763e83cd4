// Package gptread finds and reads the GUID Partition Table (UEFI 2.10
// §5.3) of a device or image file, given as an io.ReaderAt and its size.
// It is the agent's one place that decides whether a disk has a GPT and
// that hands one to go-diskfs's gpt.Read.
//
// A GPT is present (Signs.Present) when LBA 0 holds a protective MBR (boot
// signature 55h AAh and a partition record of type EEh, UEFI 2.10 §5.2.3;
// a hybrid MBR counts), when the header signature "EFI PART" opens LBA 1
// for 512- or 4096-byte blocks, or when it opens the last LBA while LBA 0
// holds no MBR at all (a disk whose first sectors were wiped). A DOS MBR
// with a stale backup header at the disk's end is an MBR disk, as the
// kernel and libblkid see it.
//
// Read refuses, before go-diskfs allocates anything, a header that passes
// its CRC but describes an entry array go-diskfs cannot read safely.
// go-diskfs v1.9.4 allocates entry count × entry size bytes as the header
// says: 2^32-1 entries of 2^32-1 bytes overflow and panic in make, 2^32-1
// entries of 128 bytes ask for 512 GiB. Read wants entries of 128 bytes
// (the only size go-diskfs parses, and Linux reads), an array of at most
// 4 MiB (Linux's limit, KMALLOC_MAX_SIZE on x86) lying inside the device.
//
// Errors wrap one of two sentinels: ErrNoGPT (positively none) and
// ErrUnreadable (signs of a GPT, but no table that can be trusted).
package gptread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Errors callers branch on with errors.Is.
var (
	// ErrNoGPT is a device that positively has no GPT (see Signs.Present).
	ErrNoGPT = errors.New("no GPT")
	// ErrUnreadable is a device showing signs of a GPT whose table cannot
	// be read or trusted: an I/O error, a device too short for it, a
	// header or entry array failing its CRC32 (both copies), a header out
	// of bounds, or a primary only recoverable from the backup when the
	// caller requires the primary.
	ErrUnreadable = errors.New("GPT present but unreadable")
)

// Signature opens every GPT header (UEFI 2.10 §5.3.2).
const Signature = "EFI PART"

// The logical block sizes a GPT is looked for with when the device does
// not tell (an image file, a loop device over one).
const (
	Block512  = 512
	Block4096 = 4096
)

// GPT header fields (UEFI 2.10 table 5.5) and the bounds Read enforces.
const (
	headerSize    = 92
	offHeaderSize = 12
	offHeaderCRC  = 16
	offEntriesLBA = 72
	offEntryCount = 80
	offEntrySize  = 84
	entrySize     = 128     // the only size go-diskfs and Linux read
	maxEntryArray = 4 << 20 // Linux refuses larger arrays
)

// Signs are the marks of a GPT on a device, for one logical block size.
type Signs struct {
	// MBR is true when LBA 0 ends in the boot signature 55h AAh.
	MBR bool
	// ProtectiveMBR is true when that MBR has a record of type EEh.
	ProtectiveMBR bool
	// Primary is true when Signature opens LBA 1.
	Primary bool
	// Backup is true when Signature opens the last LBA.
	Backup bool
	// Elsewhere is true when Signature opens LBA 1 for the other common
	// block size (4096 when probing with 512 and the other way round): a
	// table made for another sector size.
	Elsewhere bool
}

// backupCounts: a backup header is believed unless a DOS MBR (one without
// a protective record) says the disk is partitioned otherwise.
func (s Signs) backupCounts() bool { return s.Backup && (!s.MBR || s.ProtectiveMBR) }

// Present reports whether the device has a GPT, for any block size.
func (s Signs) Present() bool {
	return s.ProtectiveMBR || s.Primary || s.Elsewhere || s.backupCounts()
}

// Header reports whether a GPT header for the probed block size is where
// one belongs (LBA 1, or the last LBA as Present allows it), so that Read
// with that size has a table to try.
func (s Signs) Header() bool { return s.Primary || s.backupCounts() }

// Probe reads the signs of a GPT on the device of size bytes read through
// r, for logical blocks of lbs bytes (a power of two from 512 to 65536).
// It fails, wrapping ErrUnreadable, on an I/O error or a device too short
// to hold LBA 0.
func Probe(r io.ReaderAt, size int64, lbs int) (Signs, error) {
	if lbs < 512 || lbs > 1<<16 || lbs&(lbs-1) != 0 {
		return Signs{}, fmt.Errorf("probe GPT: logical block size %d", lbs)
	}
	if size < 512 {
		return Signs{}, fmt.Errorf("%w: the device holds %d bytes, too few for LBA 0", ErrUnreadable, size)
	}
	head := make([]byte, min(size, int64(max(2*lbs, Block4096+len(Signature)))))
	if err := readFull(r, head, 0); err != nil {
		return Signs{}, fmt.Errorf("%w: read [0,%d): %w", ErrUnreadable, len(head), err)
	}
	var s Signs
	s.MBR = head[510] == 0x55 && head[511] == 0xaa
	if s.MBR {
		for i := range 4 {
			if head[446+16*i+4] == 0xee {
				s.ProtectiveMBR = true
			}
		}
	}
	s.Primary = hasSignature(head, lbs)
	for _, other := range []int{Block512, Block4096} {
		if other != lbs && hasSignature(head, other) {
			s.Elsewhere = true
		}
	}
	if last := size/int64(lbs)*int64(lbs) - int64(lbs); last >= int64(lbs) {
		b := make([]byte, len(Signature))
		if err := readFull(r, b, last); err != nil {
			return Signs{}, fmt.Errorf("%w: read the last LBA at %d: %w", ErrUnreadable, last, err)
		}
		s.Backup = string(b) == Signature
	}
	return s, nil
}

func hasSignature(head []byte, off int) bool {
	return len(head) >= off+len(Signature) && string(head[off:off+len(Signature)]) == Signature
}

// Option tunes Read.
type Option func(*options)

type options struct{ requirePrimary bool }

// RequirePrimary makes a table only recoverable from the backup header an
// error wrapping ErrUnreadable, for callers that rewrite the table and
// must not do so silently over a damaged primary.
func RequirePrimary() Option { return func(o *options) { o.requirePrimary = true } }

// Read reads the GPT of the device of size bytes read through r, with
// logical blocks of lbs bytes: through the primary header, else the
// backup (Table.RecoveredFromBackup set). It fails wrapping ErrNoGPT when
// the device positively has none (Signs.Present), and wrapping
// ErrUnreadable for any other failure.
func Read(r io.ReaderAt, size int64, lbs int, opts ...Option) (*gpt.Table, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s, err := Probe(r, size, lbs)
	if err != nil {
		return nil, err
	}
	return read(r, size, lbs, s, o)
}

func read(r io.ReaderAt, size int64, lbs int, s Signs, o options) (*gpt.Table, error) {
	switch {
	case !s.Present():
		return nil, fmt.Errorf("%w: neither a protective MBR nor a GPT header at LBA 1 (512- or 4096-byte blocks) or at the last LBA", ErrNoGPT)
	case size < 2*int64(lbs):
		return nil, fmt.Errorf("%w: the device holds %d bytes, too few for a GPT with %d-byte blocks", ErrUnreadable, size, lbs)
	case !s.Header():
		return nil, fmt.Errorf("%w: %s announces a GPT, but there is no GPT header for %d-byte blocks at LBA 1 or at the last LBA", ErrUnreadable, announcer(s), lbs)
	}
	for _, off := range []int64{int64(lbs), size/int64(lbs)*int64(lbs) - int64(lbs)} {
		if err := checkHeader(r, size, lbs, off); err != nil {
			return nil, fmt.Errorf("%w: GPT header at %d (%d-byte blocks): %w", ErrUnreadable, off, lbs, err)
		}
	}
	t, err := gpt.Read(readerFile{io.NewSectionReader(r, 0, size)}, lbs, lbs)
	if err != nil {
		return nil, fmt.Errorf("%w: GPT with %d-byte blocks: %w", ErrUnreadable, lbs, err)
	}
	if t.RecoveredFromBackup && o.requirePrimary {
		return nil, fmt.Errorf("%w: the primary GPT header or entries are damaged (only the backup verifies)", ErrUnreadable)
	}
	return t, nil
}

func announcer(s Signs) string {
	if s.ProtectiveMBR {
		return "a protective MBR"
	}
	return "a GPT header for another block size"
}

// ReadAny reads the GPT of a device whose logical block size is unknown:
// with each of 512 and 4096 whose header (Signs.Header) is on the device,
// one table per size found, in that order. It fails wrapping ErrNoGPT when
// the device positively has no GPT, and wrapping ErrUnreadable when it
// shows one that no size reads (a protective MBR without any header) or
// when any table found cannot be read.
func ReadAny(r io.ReaderAt, size int64, opts ...Option) ([]*gpt.Table, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var tables []*gpt.Table
	var first Signs
	for i, lbs := range []int{Block512, Block4096} {
		s, err := Probe(r, size, lbs)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			first = s
		}
		if !s.Header() {
			continue
		}
		t, err := read(r, size, lbs, s, o)
		if err != nil {
			return nil, err
		}
		tables = append(tables, t)
	}
	if len(tables) == 0 {
		// No header for either size: ErrNoGPT, or a GPT announced
		// without one.
		_, err := read(r, size, Block512, first, o)
		return nil, err
	}
	return tables, nil
}

// checkHeader refuses the GPT header at off when go-diskfs would accept
// it (signature, header size 92, CRC32) but its partition entry array is
// not one it can read safely. Other headers are left to gpt.Read, which
// rejects them before reading their entries.
func checkHeader(r io.ReaderAt, size int64, lbs int, off int64) error {
	h := make([]byte, headerSize)
	if err := readFull(r, h, off); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.HasPrefix(h, []byte(Signature)) || binary.LittleEndian.Uint32(h[offHeaderSize:]) != headerSize {
		return nil
	}
	want := binary.LittleEndian.Uint32(h[offHeaderCRC:])
	clear(h[offHeaderCRC : offHeaderCRC+4])
	if crc32.ChecksumIEEE(h) != want {
		return nil
	}
	first := binary.LittleEndian.Uint64(h[offEntriesLBA:])
	count := uint64(binary.LittleEndian.Uint32(h[offEntryCount:]))
	esize := uint64(binary.LittleEndian.Uint32(h[offEntrySize:]))
	switch {
	case esize != entrySize:
		return fmt.Errorf("partition entries of %d bytes are not supported (want %d)", esize, entrySize)
	case count*esize > maxEntryArray:
		return fmt.Errorf("a partition entry array of %d entries is larger than %d bytes", count, maxEntryArray)
	case first > uint64(size)/uint64(lbs) || first*uint64(lbs)+count*esize > uint64(size):
		return fmt.Errorf("the partition entry array at LBA %d (%d entries) runs past the device's end at %d bytes", first, count, size)
	}
	return nil
}

// readFull reads len(b) bytes at off; a short read is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readerFile gives an io.SectionReader the methods of go-diskfs's
// backend.File that gpt.Read does not call.
type readerFile struct{ *io.SectionReader }

func (readerFile) Stat() (fs.FileInfo, error) { return nil, errors.ErrUnsupported }
func (readerFile) Close() error               { return nil }
