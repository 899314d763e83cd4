// Package erase removes data from block devices. This file is the pure
// core: which byte ranges a quick (metadata) erase must clear. The I/O that
// clears and verifies them lives in erase_linux.go and methods_linux.go;
// partitions.go reads the partition tables (GPT through agent/disks/gptread,
// MBR with its extended chain) that say where partitions start.
//
// A quick erase clears, on the device and inside every partition, the
// first and the last MiB, which hold every partition table (MBR, both GPT
// headers and entry arrays) and the signatures wipefs finds (offsets as
// util-linux libblkid probes them): ext2/3/4 (superblock at 1 KiB, magic
// 0xEF53 at +56), XFS ("XFSB" at 0), btrfs's primary superblock (64 KiB,
// magic "_BHRfS_M" at +0x40), ISO 9660 (32 KiB), LVM2 PV labels
// ("LABELONE" in sector 0..3, "LVM2 001" type), Linux MD superblocks
// (magic 0xa92b4efc: v0.90 at the size rounded down to 64 KiB minus
// 64 KiB, v1.0 at the size rounded down to 4 KiB minus 8 KiB, v1.1 at 0,
// v1.2 at 4 KiB), swap ("SWAPSPACE2"/"SWAP-SPACE" 10 bytes before the end
// of the first 4..64 KiB page), LUKS ("LUKS\xba\xbe" at 0) and ZFS labels
// (two at the start, two in the last 512 KiB). Besides: btrfs's mirror
// superblocks at 64 MiB and 256 GiB and LUKS2's secondary headers at 1, 2
// and 4 MiB (those at 16..512 KiB are in the first MiB) when they fit.
package erase

import "sort"

// MiB is the size of the head and tail regions.
const MiB = 1 << 20

// Region is a byte range [Off, Off+Len) to clear.
type Region struct {
	Off, Len int64
}

// farSignatures are 4 KiB or 64 KiB blocks beyond the first MiB that hold
// signatures: btrfs mirror superblocks (64 KiB each cleared) and LUKS2
// secondary headers (4 KiB binary header each).
var farSignatures = [...]Region{
	{64 << 20, 64 << 10}, {256 << 30, 64 << 10}, // btrfs mirrors
	{1 << 20, 4 << 10}, {2 << 20, 4 << 10}, {4 << 20, 4 << 10}, // LUKS2 secondary headers
}

// Partition is a partition's byte range on its device.
type Partition struct {
	Off, Len int64
}

// signatureRegions are the regions of a volume of size bytes that hold
// signatures, relative to its start and not aligned.
func signatureRegions(size int64) []Region {
	if size <= 0 {
		return nil
	}
	rs := []Region{{0, min(int64(MiB), size)}, {max(size-MiB, 0), min(int64(MiB), size)}}
	for _, r := range farSignatures {
		if r.Off+r.Len <= size {
			rs = append(rs, r)
		}
	}
	return rs
}

// QuickRegions returns the sorted, merged regions a quick erase clears on a
// device of size bytes without partitions. Every region is aligned to
// align bytes (the logical block size; 4096 is safe for O_DIRECT).
func QuickRegions(size, align int64) []Region {
	return QuickPlan(size, align, nil)
}

// QuickPlan returns the sorted, merged regions a quick erase clears on a
// device of size bytes holding parts: the device's signature regions and
// every partition's, each widened to align bytes (a partition need not
// start on an aligned offset) and cut at the device's end.
func QuickPlan(size, align int64, parts []Partition) []Region {
	if size <= 0 {
		return nil
	}
	if align <= 0 {
		align = 4096
	}
	var rs []Region
	add := func(base int64, rel []Region) {
		for _, r := range rel {
			start := base + r.Off
			end := min(base+r.Off+r.Len, size)
			start -= start % align
			if rem := end % align; rem != 0 {
				end = min(end+align-rem, size)
			}
			if start < end {
				rs = append(rs, Region{start, end - start})
			}
		}
	}
	add(0, signatureRegions(size))
	for _, p := range parts {
		add(p.Off, signatureRegions(p.Len))
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
