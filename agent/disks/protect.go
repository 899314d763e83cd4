package disks

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
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

// CheckProtected fails when the disk at path may carry the protect marker
// (a GPT partition named label, case-insensitive): with an error wrapping
// [ErrProtected] when a partition carries it, and wrapping [ErrUnreadable]
// when the partition table cannot be read (an I/O error, a GPT whose
// primary and backup headers or entry arrays both fail their CRC, a table
// running past the end of the device, a protective MBR without any GPT
// header, an entry array go-diskfs cannot read safely: agent/disks/gptread
// decides). Callers refuse the disk on any error. A disk without a GPT
// (blank, or MBR partitions only, even with a stale backup GPT header at
// its end) is not protected. An empty label disables the check.
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
// device does not say which one its image was made with): every GPT found
// must be readable, through the backup when the primary fails its CRCs.
func checkGPT(r io.ReaderAt, size int64, label string) error {
	tables, err := gptread.ReadAny(r, size)
	if errors.Is(err, gptread.ErrNoGPT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	for _, t := range tables {
		for _, p := range t.Partitions {
			if p != nil && p.Type != gpt.Unused && strings.EqualFold(strings.TrimSpace(p.Name), label) {
				return fmt.Errorf("%w: partition %d is named %q (%d-byte blocks)", ErrProtected, p.Index, p.Name, t.LogicalSectorSize)
			}
		}
	}
	return nil
}
