package inventory

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ProductUUIDFromSysfs returns the running machine's SMBIOS system UUID
// from /sys/class/dmi/id/product_uuid in lower-case canonical form. Reading
// it needs root.
func ProductUUIDFromSysfs() (string, error) {
	return productUUIDFromSysfs(liveRoot)
}

func productUUIDFromSysfs(root string) (string, error) {
	path := filepath.Join(root, "sys", "class", "dmi", "id", "product_uuid")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", errAttr(path, err)
	}
	u, err := canonicalUUID(string(b))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// canonicalUUID returns s as a lower-case canonical UUID
// (8-4-4-4-12 hex digits). It accepts the canonical form in any case, or 32
// bare hex digits. SMBIOS (DSP0134 7.2.1) reserves all-ones for "not
// present" and all-zeros for "present but not set": both are rejected, as
// they identify no machine.
func canonicalUUID(s string) (string, error) {
	s = strings.TrimSpace(s)
	digits := s
	if len(s) == 36 {
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return "", fmt.Errorf("malformed UUID %q", s)
		}
		digits = strings.ReplaceAll(s, "-", "")
	}
	if len(digits) != 32 {
		return "", fmt.Errorf("malformed UUID %q", s)
	}
	b, err := hex.DecodeString(digits)
	if err != nil {
		return "", fmt.Errorf("malformed UUID %q", s)
	}
	allZero, allOnes := true, true
	for _, x := range b {
		allZero = allZero && x == 0
		allOnes = allOnes && x == 0xff
	}
	if allZero || allOnes {
		return "", errors.New("SMBIOS system UUID is not set (" + s + ")")
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}
