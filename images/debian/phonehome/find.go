package phonehome

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Seed marks, as udev names them and as anvil-agent writes them.
var seedLinks = []string{
	"dev/disk/by-label/CIDATA",
	"dev/disk/by-label/cidata",
	"dev/disk/by-partlabel/cidata",
}

// FindSeed returns the block device holding the seed on the system rooted
// at root ("/"), and how it was recognised: udev's by-label and
// by-partlabel links first, else every block device in /sys/class/block
// whose FAT boot sector carries the label CIDATA (no udev, or udev not yet
// done). The error wraps ErrNoSeed when there is none.
func FindSeed(root string) (dev, mark string, err error) {
	for _, l := range seedLinks {
		p := filepath.Join(root, l)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", "", fmt.Errorf("resolve %s: %w", p, err)
		}
		return real, "/" + l, nil
	}
	names, err := os.ReadDir(filepath.Join(root, "sys/class/block"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("list block devices: %w", err)
	}
	var unreadable []string
	sorted := make([]string, 0, len(names))
	for _, n := range names {
		sorted = append(sorted, n.Name())
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		p := filepath.Join(root, "dev", n)
		label, ok, err := labelOf(p)
		if err != nil {
			// A drive without a medium: passed over, but said.
			unreadable = append(unreadable, err.Error())
			continue
		}
		if ok && strings.EqualFold(label, "CIDATA") {
			return p, "FAT label " + label, nil
		}
	}
	if len(unreadable) > 0 {
		return "", "", fmt.Errorf("%w (unreadable: %s)", ErrNoSeed, strings.Join(unreadable, "; "))
	}
	return "", "", ErrNoSeed
}

func labelOf(dev string) (string, bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	bs := make([]byte, 512)
	if _, err := io.ReadFull(f, bs); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return "", false, nil // smaller than a sector: no FAT
		}
		return "", false, fmt.Errorf("read %s: %w", dev, err)
	}
	label, ok := FATLabel(bs)
	return label, ok, nil
}
