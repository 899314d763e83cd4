package disks

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// DefaultProtectLabel is the GPT partition name that marks a disk as one
// the agent must never erase or overwrite (a data disk kept across
// reinstalls, a disk with an operator's recovery system).
const DefaultProtectLabel = "anvil-protected"

// ErrProtected is a disk carrying the protect marker.
var ErrProtected = errors.New("disk carries the protect marker")

// CheckProtected fails with ErrProtected when a partition of the disk at
// path is named label (GPT partition name, case-insensitive). An empty
// label disables the check; a disk without a readable GPT is not
// protected.
func CheckProtected(path, label string) error {
	if label == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read partition table of %s: %w", path, err)
	}
	defer f.Close()
	for _, lbs := range []int{512, 4096} {
		t, err := gpt.Read(f, lbs, lbs)
		if err != nil {
			continue
		}
		for _, p := range t.Partitions {
			if p != nil && p.Type != gpt.Unused && strings.EqualFold(strings.TrimSpace(p.Name), label) {
				return fmt.Errorf("%w: %s partition %d is named %q", ErrProtected, path, p.Index, p.Name)
			}
		}
		return nil
	}
	return nil
}
