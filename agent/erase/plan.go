// Package erase removes data from block devices. This file is the pure
// core: which byte ranges a quick (metadata) erase must clear. The I/O that
// clears and verifies them lives in erase_linux.go.
//
// A quick erase clears the first and the last MiB of the device, which holds
// every partition table (MBR, both GPT headers and entry arrays), the
// signatures of the common filesystems (ext2/3/4 at 1 KiB, XFS at 0, btrfs's
// primary superblock at 64 KiB, ISO 9660 at 32 KiB), LVM2 labels (sector 1),
// Linux MD superblocks (v0.90/1.0 near the end, v1.1/1.2 at 0 and 4 KiB) and
// ZFS labels (two at the start, two in the last 512 KiB). btrfs keeps mirror
// superblocks at 64 MiB and 256 GiB; those are cleared too when the device
// is large enough.
package erase

import "sort"

// MiB is the size of the head and tail regions.
const MiB = 1 << 20

// Region is a byte range [Off, Off+Len) to clear.
type Region struct {
	Off, Len int64
}

// btrfsMirrors are the offsets of btrfs's mirror superblocks.
var btrfsMirrors = [...]int64{64 << 20, 256 << 30}

// QuickRegions returns the sorted, merged regions a quick erase clears on a
// device of size bytes. Every region is aligned to align bytes (the logical
// block size; 4096 is safe for O_DIRECT).
func QuickRegions(size, align int64) []Region {
	if size <= 0 {
		return nil
	}
	if align <= 0 {
		align = 4096
	}
	head := min(int64(MiB), size)
	rs := []Region{{0, head}}
	tail := max(size-MiB, 0)
	tail -= tail % align
	rs = append(rs, Region{tail, size - tail})
	for _, off := range btrfsMirrors {
		if off+64<<10 <= size {
			rs = append(rs, Region{off, 64 << 10})
		}
	}
	return merge(rs)
}

func merge(rs []Region) []Region {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Off < rs[j].Off })
	var out []Region
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].Off+out[n-1].Len {
			end := max(out[n-1].Off+out[n-1].Len, r.Off+r.Len)
			out[n-1].Len = end - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}

// Total is the number of bytes the regions cover.
func Total(rs []Region) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	return n
}
