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
		{"three MiB: LUKS2 secondary headers at 1 MiB and 2 MiB (in the tail)", 3 * MiB, []Region{{0, MiB + 4096}, {2 * MiB, MiB}}},
		{"unaligned size: tail starts aligned, ends at the last byte", 10*MiB + 512, []Region{{0, MiB + 4096}, {2 * MiB, 4096}, {4 * MiB, 4096}, {9 * MiB, MiB + 512}}},
		{"btrfs mirror at 64 MiB", 100 * MiB, []Region{{0, MiB + 4096}, {2 * MiB, 4096}, {4 * MiB, 4096}, {64 * MiB, 64 << 10}, {99 * MiB, MiB}}},
		{"both btrfs mirrors", 300 << 30, []Region{{0, MiB + 4096}, {2 * MiB, 4096}, {4 * MiB, 4096}, {64 * MiB, 64 << 10}, {256 << 30, 64 << 10}, {300<<30 - MiB, MiB}}},
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

// signatureOffsets are where util-linux libblkid (superblocks/*.c) looks for
// each signature in a volume of size bytes: offset and length of the magic
// or structure it reads.
func signatureOffsets(size int64) map[string][2]int64 {
	m := map[string][2]int64{
		"MBR signature":               {510, 2},
		"primary GPT header":          {512, 92},
		"LVM2 label, sector 0":        {0x018, 8},
		"LVM2 label, sector 1":        {0x218, 8},
		"LVM2 label, sector 2":        {1024 + 0x018, 8},
		"LVM2 label, sector 3":        {1024 + 0x218, 8},
		"ext superblock magic":        {1024 + 0x38, 2},
		"XFS":                         {0, 4},
		"LUKS":                        {0, 6},
		"MD 1.1":                      {0, 256},
		"MD 1.2":                      {4096, 256},
		"MD 0.90":                     {size&^(64<<10-1) - 64<<10, 4096},
		"MD 1.0":                      {size&^(4<<10-1) - 8<<10, 256},
		"ISO 9660":                    {32 << 10, 6},
		"btrfs superblock magic":      {64<<10 + 0x40, 8},
		"backup GPT header":           {size - 512, 92},
		"ZFS label L3":                {size - 256<<10, 256 << 10},
		"swap, 4 KiB pages":           {0xff6, 10},
		"swap, 64 KiB pages":          {0xfff6, 10},
		"LUKS2 secondary at 16 KiB":   {16 << 10, 6},
		"LUKS2 secondary at 512 KiB":  {512 << 10, 6},
		"LUKS2 secondary at 1 MiB":    {1 << 20, 6},
		"LUKS2 secondary at 2 MiB":    {2 << 20, 6},
		"LUKS2 secondary at 4 MiB":    {4 << 20, 6},
		"btrfs mirror 64 MiB, magic":  {64<<20 + 0x40, 8},
		"btrfs mirror 256 GiB, magic": {256<<30 + 0x40, 8},
	}
	for k, v := range m {
		if v[0]+v[1] > size {
			delete(m, k)
		}
	}
	return m
}

func covered(rs []Region, off, n int64) bool {
	for _, r := range rs {
		if off >= r.Off && off+n <= r.Off+r.Len {
			return true
		}
	}
	return false
}

func TestQuickRegionsCoverSignatures(t *testing.T) {
	for _, size := range []int64{8 << 30, 300 << 30, 5*MiB + 512} {
		rs := QuickRegions(size, 4096)
		for name, at := range signatureOffsets(size) {
			if !covered(rs, at[0], at[1]) {
				t.Errorf("size %d: %s at %d is not cleared by a quick erase", size, name, at[0])
			}
		}
	}
}

// TestQuickPlanCoversPartitions is the bug: a quick erase cleared only the
// device's first and last MiB, leaving LVM, MD, filesystem, swap and LUKS
// signatures inside partitions for the next OS to find.
func TestQuickPlanCoversPartitions(t *testing.T) {
	const size = 400 << 30
	parts := []Partition{
		{1 << 20, 100 << 20},                 // GPT-aligned
		{63 * 512, 10<<20 + 7*512},           // DOS-era start at sector 63, odd length
		{101 << 20, 300 << 30},               // big: both btrfs mirrors inside
		{size - 34*512 - 200<<20, 200 << 20}, // last, up to the backup GPT
	}
	rs := QuickPlan(size, 4096, parts)
	for i, p := range parts {
		for name, at := range signatureOffsets(p.Len) {
			if !covered(rs, p.Off+at[0], at[1]) {
				t.Errorf("partition %d %+v: %s at +%d is not cleared", i+1, p, name, at[0])
			}
		}
	}
	for _, r := range rs {
		if r.Off%4096 != 0 || (r.Off+r.Len)%4096 != 0 && r.Off+r.Len != size || r.Off+r.Len > size {
			t.Errorf("region %+v is not aligned inside the device", r)
		}
	}
	// Still quick: a few MiB per partition.
	if tot := Total(rs); tot > int64(len(parts)+1)*8*MiB {
		t.Errorf("quick plan clears %d bytes", tot)
	}
	if !reflect.DeepEqual(QuickPlan(size, 4096, nil), QuickRegions(size, 4096)) {
		t.Error("QuickPlan without partitions differs from QuickRegions")
	}
	// A partition reaching past the device is cut at its end.
	for _, r := range QuickPlan(8*MiB, 4096, []Partition{{4 * MiB, 16 * MiB}}) {
		if r.Off+r.Len > 8*MiB {
			t.Errorf("region %+v past the 8 MiB device", r)
		}
	}
}
