package disks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// DefaultProtectLabel is the GPT partition name that marks a disk as one
// the agent must never erase or overwrite (a data disk kept across
// reinstalls, a disk with an operator's recovery system).
const DefaultProtectLabel = "anvil-protected"

var (
	// ErrProtected is a disk carrying the protect marker.
	ErrProtected = errors.New("disk carries the protect marker")
	// ErrUnreadable is a disk whose partition table cannot be read, so
	// that whether it carries the protect marker is unknown: it is
	// treated as protected.
	ErrUnreadable = errors.New("partition table unreadable, disk treated as protected")
)

// gptSignature starts every GPT header (UEFI 2.10, 5.3.2).
const gptSignature = "EFI PART"

// CheckProtected fails when the disk at path may carry the protect marker
// (a GPT partition named label, case-insensitive): with an error wrapping
// [ErrProtected] when a partition carries it, and wrapping [ErrUnreadable]
// when the partition table cannot be read (an I/O error, a GPT whose
// primary and backup headers or entry arrays both fail their CRC, a table
// running past the end of the device, a protective MBR without any GPT
// header). Callers refuse the disk on any error. A disk without a GPT
// (blank, or MBR partitions only) is not protected. An empty label disables
// the check.
func CheckProtected(path, label string) error {
	if label == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("protect check of %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("protect check of %s: %w: size: %w", path, ErrUnreadable, err)
	}
	if err := checkGPT(f, size, label); err != nil {
		return fmt.Errorf("protect check of %s: %w", path, err)
	}
	return nil
}

// checkGPT looks for the protect marker on a device of size bytes read
// through r. Both common logical sector sizes are tried (a file or a loop
// device does not say which one its image was made with): wherever a GPT
// header signature is found, at LBA 1 or at the last LBA, the table must be
// readable, through the backup when the primary fails its CRCs.
func checkGPT(r io.ReaderAt, size int64, label string) error {
	const minSector, maxSector = 512, 4096
	if size < 2*minSector {
		return fmt.Errorf("%w: the device holds %d bytes, too few for a partition table", ErrUnreadable, size)
	}
	head := make([]byte, min(size, 2*maxSector))
	if err := readFull(r, head, 0); err != nil {
		return fmt.Errorf("%w: reading the first %d bytes: %w", ErrUnreadable, len(head), err)
	}
	found := false
	for _, lbs := range []int64{minSector, maxSector} {
		if size < 3*lbs {
			continue
		}
		primary := head[lbs : lbs+lbs]
		var backup []byte
		if size%lbs == 0 {
			backup = make([]byte, lbs)
			if err := readFull(r, backup, size-lbs); err != nil {
				return fmt.Errorf("%w: reading the last LBA (%d-byte sectors): %w", ErrUnreadable, lbs, err)
			}
		}
		if !bytes.HasPrefix(primary, []byte(gptSignature)) && !bytes.HasPrefix(backup, []byte(gptSignature)) {
			continue
		}
		found = true
		for _, h := range [][]byte{primary, backup} {
			if err := checkHeaderBounds(h); err != nil {
				return fmt.Errorf("%w: GPT with %d-byte sectors: %w", ErrUnreadable, lbs, err)
			}
		}
		t, err := gpt.Read(readerFile{io.NewSectionReader(r, 0, size)}, int(lbs), int(lbs))
		if err != nil {
			return fmt.Errorf("%w: GPT with %d-byte sectors: %w", ErrUnreadable, lbs, err)
		}
		for _, p := range t.Partitions {
			if p != nil && p.Type != gpt.Unused && strings.EqualFold(strings.TrimSpace(p.Name), label) {
				return fmt.Errorf("%w: partition %d is named %q", ErrProtected, p.Index, p.Name)
			}
		}
	}
	if !found && protectiveMBR(head[:minSector]) {
		return fmt.Errorf("%w: a protective MBR announces a GPT, but there is no GPT header at LBA 1 or at the last LBA", ErrUnreadable)
	}
	return nil
}

// readFull reads len(b) bytes at off; a short read is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// GPT header fields (UEFI 2.10, table 5.5).
const (
	gptHeaderSize      = 92
	gptOffHeaderSize   = 12
	gptOffHeaderCRC    = 16
	gptOffEntryCount   = 80
	gptOffEntrySize    = 84
	gptEntrySize       = 128     // the only size go-diskfs reads
	gptMaxEntriesBytes = 1 << 20 // 8192 entries; the spec's minimum is 16 KiB
)

// checkHeaderBounds refuses a GPT header that passes its CRC but describes
// a partition entry array go-diskfs cannot read safely (entry sizes other
// than 128 bytes, or an array above 1 MiB). Headers without the signature
// or failing their CRC are left to gpt.Read, which ignores them.
func checkHeaderBounds(h []byte) error {
	if len(h) < gptHeaderSize || !bytes.HasPrefix(h, []byte(gptSignature)) ||
		binary.LittleEndian.Uint32(h[gptOffHeaderSize:]) != gptHeaderSize {
		return nil
	}
	hdr := bytes.Clone(h[:gptHeaderSize])
	want := binary.LittleEndian.Uint32(hdr[gptOffHeaderCRC:])
	clear(hdr[gptOffHeaderCRC : gptOffHeaderCRC+4])
	if crc32.ChecksumIEEE(hdr) != want {
		return nil
	}
	count := uint64(binary.LittleEndian.Uint32(h[gptOffEntryCount:]))
	size := uint64(binary.LittleEndian.Uint32(h[gptOffEntrySize:]))
	if size != gptEntrySize {
		return fmt.Errorf("partition entries of %d bytes are not supported (want %d)", size, gptEntrySize)
	}
	if count*size > gptMaxEntriesBytes {
		return fmt.Errorf("a partition entry array of %d entries is larger than %d bytes", count, gptMaxEntriesBytes)
	}
	return nil
}

// protectiveMBR reports whether an MBR sector (boot signature 0x55AA) has a
// partition of type 0xEE, which announces a GPT (UEFI 2.10, 5.2.3).
func protectiveMBR(mbr []byte) bool {
	if len(mbr) < 512 || mbr[510] != 0x55 || mbr[511] != 0xAA {
		return false
	}
	for i := range 4 {
		if mbr[446+16*i+4] == 0xEE {
			return true
		}
	}
	return false
}

// readerFile gives an io.SectionReader the methods of go-diskfs's
// backend.File that gpt.Read does not call.
type readerFile struct{ *io.SectionReader }

func (readerFile) Stat() (fs.FileInfo, error) { return nil, errors.ErrUnsupported }
func (readerFile) Close() error               { return nil }
