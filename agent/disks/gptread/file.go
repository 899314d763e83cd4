package gptread

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// CheckFile reads the GPT of the device or image file at path (any block
// size) and returns an error wrapping ErrUnreadable when it shows one that
// cannot be read safely; no GPT, or a good one, is nil. Callers that hand
// the path to go-diskfs's diskfs.Open, which reads the table itself and
// allocates what a forged header asks for, check it here first.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // block devices report no size in Stat
	if err != nil {
		return fmt.Errorf("size of %s: %w", path, err)
	}
	if _, err := ReadAny(f, size); err != nil && !errors.Is(err, ErrNoGPT) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
