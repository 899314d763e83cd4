// Package ext4norm makes an ext4 filesystem written by go-diskfs
// reproducible. go-diskfs v1.9.4 stamps the superblock and every inode it
// writes with the clock and draws the directory hash seed at random, with
// no option to fix them, so two builds from the same inputs differ in
// about a hundred bytes. Normalize rewrites exactly those fields, as laid
// out in the kernel's ext4 disk layout documentation
// (Documentation/filesystems/ext4/: "Super Block", "Block Group
// Descriptors", "Index Nodes"):
//
//   - in the superblock and its sparse_super backups: s_mtime, s_wtime,
//     s_lastcheck, s_mkfs_time (and their _hi bytes) become the epoch,
//     s_hash_seed the given seed;
//   - in every inode: i_atime, i_ctime, i_mtime, i_crtime (with their
//     _extra words) become the epoch where they are set, and the inode
//     checksum is recomputed (crc32c over the inode number, generation and
//     inode, seeded from the filesystem UUID or s_checksum_seed).
//
// The hash seed only matters to hashed (htree) directories; a filesystem
// with one is refused, as is one with metadata_csum (whose superblock and
// directory-block checksums this package does not recompute). Each
// inode's existing checksum is verified before it is rewritten, so a
// checksum scheme other than the one documented fails loudly.
package ext4norm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Storage is the medium: an image file or a device.
type Storage interface {
	io.ReaderAt
	io.WriterAt
}

// ErrUnsupported is a filesystem this package cannot normalize.
var ErrUnsupported = errors.New("ext4 filesystem not normalizable")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c_le: no pre- or post-inversion.
func crc32c(seed uint32, b []byte) uint32 { return ^crc32.Update(^seed, castagnoli, b) }

// Superblock fields (offsets within the 1024-byte superblock).
const (
	sbOffset        = 1024
	sbInodesCount   = 0x00
	sbBlocksCount   = 0x04
	sbFirstData     = 0x14
	sbLogBlockSize  = 0x18
	sbBlocksPerGrp  = 0x20
	sbInodesPerGrp  = 0x28
	sbMtime         = 0x2C
	sbWtime         = 0x30
	sbMagic         = 0x38
	sbLastcheck     = 0x40
	sbInodeSize     = 0x58
	sbFeatureCompat = 0x5C
	sbFeatureIncom  = 0x60
	sbFeatureRO     = 0x64
	sbUUID          = 0x68
	sbHashSeed      = 0xEC
	sbDescSize      = 0xFE
	sbMkfsTime      = 0x108
	sbBlocksHi      = 0x150
	sbChecksumSeed  = 0x270
	sbWtimeHi       = 0x274
	sbMtimeHi       = 0x275
	sbMkfsTimeHi    = 0x276
	sbLastcheckHi   = 0x277

	incompat64Bit    = 0x80
	incompatCsumSeed = 0x2000
	roMetadataCsum   = 0x400
	roSparseSuper    = 0x1
)

// Inode fields.
const (
	inMode       = 0x00
	inAtime      = 0x08
	inCtime      = 0x0C
	inMtime      = 0x10
	inLinks      = 0x1A
	inFlags      = 0x20
	inGeneration = 0x64
	inCsumLo     = 0x7C
	inExtraIsize = 0x80
	inCsumHi     = 0x82
	inCtimeExtra = 0x84
	inMtimeExtra = 0x88
	inAtimeExtra = 0x8C
	inCrtime     = 0x90
	inCrtimeExtr = 0x94

	flagIndex = 0x1000 // EXT4_INDEX_FL: a hashed directory
)

// Stats says what Normalize changed.
type Stats struct {
	Superblocks, Inodes int
}

// Normalize rewrites the time stamps and the hash seed of the ext4
// filesystem that starts at byte start of s (see the package comment).
func Normalize(s Storage, start int64, epoch time.Time, hashSeed [16]byte) (Stats, error) {
	var st Stats
	sb := make([]byte, 1024)
	if _, err := s.ReadAt(sb, start+sbOffset); err != nil {
		return st, fmt.Errorf("read ext4 superblock at %d: %w", start+sbOffset, err)
	}
	if binary.LittleEndian.Uint16(sb[sbMagic:]) != 0xEF53 {
		return st, fmt.Errorf("no ext4 superblock at %d: %w", start+sbOffset, ErrUnsupported)
	}
	le := binary.LittleEndian
	incompat, ro := le.Uint32(sb[sbFeatureIncom:]), le.Uint32(sb[sbFeatureRO:])
	if ro&roMetadataCsum != 0 {
		return st, fmt.Errorf("metadata_csum is enabled: %w", ErrUnsupported)
	}
	bs := int64(1024) << le.Uint32(sb[sbLogBlockSize:])
	firstData := int64(le.Uint32(sb[sbFirstData:]))
	blocks := int64(le.Uint32(sb[sbBlocksCount:]))
	descSize := int64(32)
	if incompat&incompat64Bit != 0 {
		blocks |= int64(le.Uint32(sb[sbBlocksHi:])) << 32
		descSize = int64(le.Uint16(sb[sbDescSize:]))
	}
	bpg, ipg := int64(le.Uint32(sb[sbBlocksPerGrp:])), int64(le.Uint32(sb[sbInodesPerGrp:]))
	inodeSize := int64(le.Uint16(sb[sbInodeSize:]))
	if bpg == 0 || ipg == 0 || inodeSize < 128 || descSize < 32 {
		return st, fmt.Errorf("superblock geometry blocks/group %d inodes/group %d inode size %d descriptor size %d: %w",
			bpg, ipg, inodeSize, descSize, ErrUnsupported)
	}
	groups := (blocks - firstData + bpg - 1) / bpg
	uuid := append([]byte(nil), sb[sbUUID:sbUUID+16]...)
	csumSeed := crc32c(^uint32(0), uuid)
	if incompat&incompatCsumSeed != 0 {
		csumSeed = le.Uint32(sb[sbChecksumSeed:])
	}

	// Inodes first: a hashed directory must be found before the seed
	// changes.
	gdt := make([]byte, groups*descSize)
	if _, err := s.ReadAt(gdt, start+(firstData+1)*bs); err != nil {
		return st, fmt.Errorf("read group descriptors: %w", err)
	}
	table := make([]byte, ipg*inodeSize)
	for g := range groups {
		d := gdt[g*descSize:]
		itab := int64(le.Uint32(d[0x8:]))
		if descSize >= 64 {
			itab |= int64(le.Uint32(d[0x28:])) << 32
		}
		off := start + itab*bs
		if _, err := s.ReadAt(table, off); err != nil {
			return st, fmt.Errorf("read inode table of group %d at %d: %w", g, off, err)
		}
		changed := false
		for i := range ipg {
			in := table[i*inodeSize : (i+1)*inodeSize]
			num := uint32(g*ipg + i + 1)
			ok, err := normalizeInode(in, num, csumSeed, epoch)
			if err != nil {
				return st, fmt.Errorf("inode %d: %w", num, err)
			}
			if ok {
				changed = true
				st.Inodes++
			}
		}
		if changed {
			if _, err := s.WriteAt(table, off); err != nil {
				return st, fmt.Errorf("write inode table of group %d at %d: %w", g, off, err)
			}
		}
	}

	for g := range groups {
		if g > 0 && (ro&roSparseSuper == 0 || !sparseGroup(g)) {
			continue
		}
		off := start + sbOffset
		if g > 0 {
			// A backup fills the group's first block.
			off = start + (firstData+g*bpg)*bs
		}
		b := make([]byte, 1024)
		if _, err := s.ReadAt(b, off); err != nil {
			return st, fmt.Errorf("read superblock of group %d at %d: %w", g, off, err)
		}
		if le.Uint16(b[sbMagic:]) != 0xEF53 || string(b[sbUUID:sbUUID+16]) != string(uuid) {
			return st, fmt.Errorf("group %d has no backup superblock at %d: %w", g, off, ErrUnsupported)
		}
		normalizeSuperblock(b, epoch, hashSeed)
		if _, err := s.WriteAt(b, off); err != nil {
			return st, fmt.Errorf("write superblock of group %d at %d: %w", g, off, err)
		}
		st.Superblocks++
	}
	return st, nil
}

// sparseGroup says whether sparse_super keeps a backup superblock in group
// g: groups 0, 1 and the powers of 3, 5 and 7.
func sparseGroup(g int64) bool {
	if g <= 1 {
		return true
	}
	for _, b := range []int64{3, 5, 7} {
		n := b
		for n < g {
			n *= b
		}
		if n == g {
			return true
		}
	}
	return false
}

// encodeTime splits t into the 32-bit seconds field and the _extra word
// (two epoch bits, 30 bits of nanoseconds).
func encodeTime(t time.Time) (lo, extra uint32) {
	sec := t.Unix()
	lo = uint32(sec)
	epochBits := uint32((sec-int64(int32(lo)))>>32) & 3
	return lo, epochBits | uint32(t.Nanosecond())<<2
}

func normalizeSuperblock(b []byte, epoch time.Time, seed [16]byte) {
	le := binary.LittleEndian
	sec := epoch.Unix()
	for _, f := range []struct{ lo, hi int }{{sbMtime, sbMtimeHi}, {sbWtime, sbWtimeHi}, {sbLastcheck, sbLastcheckHi}, {sbMkfsTime, sbMkfsTimeHi}} {
		if le.Uint32(b[f.lo:]) == 0 && b[f.hi] == 0 {
			continue
		}
		le.PutUint32(b[f.lo:], uint32(sec))
		b[f.hi] = byte(sec >> 32)
	}
	copy(b[sbHashSeed:sbHashSeed+16], seed[:])
}

// normalizeInode rewrites the set time stamps of one inode and its
// checksum, after verifying the old checksum. It reports whether the inode
// is in use.
func normalizeInode(in []byte, num, csumSeed uint32, epoch time.Time) (bool, error) {
	le := binary.LittleEndian
	if le.Uint16(in[inMode:]) == 0 && le.Uint16(in[inLinks:]) == 0 {
		return false, nil
	}
	if le.Uint16(in[inMode:])&0xF000 == 0x4000 && le.Uint32(in[inFlags:])&flagIndex != 0 {
		return false, fmt.Errorf("a hashed (htree) directory depends on the hash seed: %w", ErrUnsupported)
	}
	extra := 0
	if len(in) > 128 {
		extra = int(le.Uint16(in[inExtraIsize:]))
	}
	hasHi := extra >= inCsumHi+2-128
	if old, want := inodeChecksum(in, num, csumSeed, hasHi); old != want {
		return false, fmt.Errorf("checksum %#x, computed %#x: not the documented scheme: %w", old, want, ErrUnsupported)
	}
	lo, ex := encodeTime(epoch)
	for _, f := range []struct{ lo, extra int }{{inAtime, inAtimeExtra}, {inCtime, inCtimeExtra}, {inMtime, inMtimeExtra}, {inCrtime, inCrtimeExtr}} {
		hasExtra := 128+extra >= f.extra+4
		if f.lo >= 128 && 128+extra < f.lo+4 {
			continue // i_crtime beyond i_extra_isize
		}
		if le.Uint32(in[f.lo:]) == 0 && (!hasExtra || le.Uint32(in[f.extra:]) == 0) {
			continue
		}
		le.PutUint32(in[f.lo:], lo)
		if hasExtra {
			le.PutUint32(in[f.extra:], ex)
		}
	}
	c := computeChecksum(in, num, csumSeed, hasHi)
	le.PutUint16(in[inCsumLo:], uint16(c))
	if hasHi {
		le.PutUint16(in[inCsumHi:], uint16(c>>16))
	}
	return true, nil
}

// inodeChecksum returns the stored and the computed checksum.
func inodeChecksum(in []byte, num, seed uint32, hasHi bool) (stored, computed uint32) {
	le := binary.LittleEndian
	stored = uint32(le.Uint16(in[inCsumLo:]))
	computed = computeChecksum(in, num, seed, hasHi)
	if hasHi {
		stored |= uint32(le.Uint16(in[inCsumHi:])) << 16
	} else {
		computed &= 0xFFFF
	}
	return stored, computed
}

// computeChecksum is ext4_inode_csum: crc32c over the inode number and
// generation, seeded by the filesystem's checksum seed, then over the inode
// with both checksum fields zero.
func computeChecksum(in []byte, num, seed uint32, hasHi bool) uint32 {
	le := binary.LittleEndian
	var b4 [4]byte
	le.PutUint32(b4[:], num)
	c := crc32c(seed, b4[:])
	copy(b4[:], in[inGeneration:inGeneration+4])
	c = crc32c(c, b4[:])
	cp := append([]byte(nil), in...)
	cp[inCsumLo], cp[inCsumLo+1] = 0, 0
	if hasHi {
		cp[inCsumHi], cp[inCsumHi+1] = 0, 0
	}
	return crc32c(c, cp)
}
