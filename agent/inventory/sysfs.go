package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// liveRoot is the root of the running system.
const liveRoot = "/"

// readAttr returns the trimmed content of a sysfs attribute, or "" when it
// is absent or unreadable (sysfs returns EINVAL for attributes that have no
// value right now, such as the speed of a down link).
func readAttr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readUint parses a decimal sysfs attribute; absent or malformed is 0.
func readUint(path string) uint64 {
	v, err := strconv.ParseUint(readAttr(path), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// resolveLink returns the path a sysfs symlink points to, without requiring
// the target to exist (fixture trees and snapshots hold only part of sysfs).
// A path that is not a symlink is returned unchanged. Only the last element
// is resolved, lexically: its directory must be a real one (resolve
// /sys/class/net/IF before IF/device), since sysfs links are relative.
func resolveLink(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return filepath.Clean(path), nil
	}
	target, err := os.Readlink(path)
	if err != nil {
		return "", err
	}
	if filepath.IsAbs(target) {
		return filepath.Clean(target), nil
	}
	return filepath.Join(filepath.Dir(path), target), nil
}

// linkBase returns the last element of a symlink's target ("" when path is
// not a readable symlink), e.g. the driver name from device/driver.
func linkBase(path string) string {
	target, err := os.Readlink(path)
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// devicesRel returns the path of a resolved sysfs device below
// <root>/sys/devices, e.g. "pci0000:00/0000:00:02.0/virtio1/block/vda".
func devicesRel(root, resolved string) string {
	rel, err := filepath.Rel(filepath.Join(root, "sys", "devices"), resolved)
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	return filepath.ToSlash(rel)
}

// isPCIAddress reports whether s is a PCI function address in sysfs form,
// "dddd:bb:ss.f" (domain, bus, slot, function in hex).
func isPCIAddress(s string) bool {
	if len(s) != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.' {
		return false
	}
	for i, r := range s {
		if i == 4 || i == 7 || i == 10 {
			continue
		}
		if !isHex(r) {
			return false
		}
	}
	return s[11] <= '7'
}

func isHex(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F')
}

// hasNumberSuffix reports whether s is prefix followed by a decimal number.
func hasNumberSuffix(s, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// errAttr wraps an error reading a sysfs path.
func errAttr(path string, err error) error {
	return fmt.Errorf("reading %s: %w", path, err)
}
