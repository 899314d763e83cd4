package erase

import (
	"reflect"
	"testing"
)

func TestQuickRegions(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		want []Region
	}{
		{"empty", 0, nil},
		{"smaller than a MiB", 4096, []Region{{0, 4096}}},
		{"two MiB: head and tail touch", 2 * MiB, []Region{{0, 2 * MiB}}},
		{"unaligned size: tail starts aligned, ends at the last byte", 10*MiB + 512, []Region{{0, MiB}, {9 * MiB, MiB + 512}}},
		{"btrfs mirror at 64 MiB", 100 * MiB, []Region{{0, MiB}, {64 * MiB, 64 << 10}, {99 * MiB, MiB}}},
		{"both btrfs mirrors", 300 << 30, []Region{{0, MiB}, {64 * MiB, 64 << 10}, {256 << 30, 64 << 10}, {300<<30 - MiB, MiB}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := QuickRegions(tc.size, 4096)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("QuickRegions(%d) = %v, want %v", tc.size, got, tc.want)
			}
			for _, r := range got {
				if r.Off%4096 != 0 || r.Off+r.Len > tc.size {
					t.Errorf("region %v unaligned or past the end %d", r, tc.size)
				}
			}
		})
	}
}

func TestQuickRegionsCoverSignatures(t *testing.T) {
	size := int64(8 << 30)
	rs := QuickRegions(size, 4096)
	covered := func(off, n int64) bool {
		for _, r := range rs {
			if off >= r.Off && off+n <= r.Off+r.Len {
				return true
			}
		}
		return false
	}
	for name, off := range map[string]int64{
		"MBR":                 0,
		"primary GPT header":  512,
		"ext4 superblock":     1024,
		"ISO 9660":            32 << 10,
		"btrfs superblock":    64 << 10,
		"backup GPT header":   size - 512,
		"MD 0.90 superblock":  (size &^ (64<<10 - 1)) - 64<<10,
		"ZFS label L3":        size - 256<<10,
		"btrfs mirror 64 MiB": 64 << 20,
	} {
		if !covered(off, 512) {
			t.Errorf("%s at %d is not cleared by a quick erase", name, off)
		}
	}
}
