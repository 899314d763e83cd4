package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// testImage is the benchmark's image: a raw disk with a GPT and data laid
// out like an installed system.
type testImage struct {
	Raw, Zst string
	// RawSize in bytes; RawSum is the sha256 of the raw image minus its
	// first and last MiB (the GPT, which the agent fits to the disk).
	RawSize int64
	RawSum  string
	// ZstSum is "sha256:<hex>" of the compressed file (the catalogue's).
	ZstSum  string
	ZstSize int64
	// Zero is the fraction of 4 KiB blocks that are all zero.
	Zero float64
}

// vocabulary gives text-like blocks a realistic compression ratio
// (configuration files, scripts, man pages, ELF string tables).
var vocabulary = strings.Fields(`the of and to in is for on that with as by this be are from or at
an it not config file system service install lib usr bin etc share doc include local var log
cache run boot kernel module driver device network interface address route table default
enable disable start stop restart status error warning info debug user group root home
return if else for while case esac then fi done function int char void struct static const
unsigned long size_t uint32_t uint64_t printf malloc free memcpy strlen NULL true false`)

// generate writes a size-byte raw image: about zeroFrac of it in zero runs
// (free space), 35% text-like data (compresses ~4x) and the rest random
// (already-compressed files: packages, images, firmware).
func generate(dir string, size int64, zeroFrac float64) (testImage, error) {
	img := testImage{
		Raw: filepath.Join(dir, fmt.Sprintf("image-%d.raw", size)),
		Zst: filepath.Join(dir, fmt.Sprintf("image-%d.raw.zst", size)),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return img, err
	}
	meta := img.Raw + ".meta"
	if b, err := os.ReadFile(meta); err == nil {
		if _, err := fmt.Sscan(string(b), &img.RawSize, &img.RawSum, &img.ZstSum, &img.ZstSize, &img.Zero); err == nil && img.RawSize == size {
			if _, err := os.Stat(img.Zst); err == nil {
				return img, nil
			}
		}
	}
	d, err := diskfs.Create(img.Raw+".tmp", size, diskfs.SectorSizeDefault)
	if err != nil {
		_ = os.Remove(img.Raw + ".tmp")
		d, err = diskfs.Open(img.Raw + ".tmp")
		if err != nil {
			return img, fmt.Errorf("create %s: %w", img.Raw, err)
		}
	}
	sectors := uint64(size / 512)
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 2048 + 256*2048 - 1, Type: gpt.EFISystemPartition, Name: "ESP"},
		{Index: 2, Start: 2048 + 256*2048, End: sectors - 34 - 1, Type: gpt.LinuxRootX86_64, Name: "root"},
	}}); err != nil {
		return img, err
	}
	d.Close()
	f, err := os.OpenFile(img.Raw+".tmp", os.O_RDWR, 0)
	if err != nil {
		return img, err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(42, 2026))
	const blk = 4096
	buf := make([]byte, 1<<20)
	var zeroBlocks, blocks int64
	// Data between the GPT's first and last MiB, in runs of 4 KiB blocks.
	w := bufio.NewWriterSize(io.NewOffsetWriter(f, 1<<20), 4<<20)
	for off := int64(1 << 20); off < size-(1<<20); {
		run := min(int64(1+r.IntN(256))*blk, size-(1<<20)-off)
		p := buf[:run]
		switch x := r.Float64(); {
		case x < zeroFrac:
			clear(p)
			zeroBlocks += run / blk
		case x < zeroFrac+0.35:
			fillText(r, p)
		default:
			for i := 0; i < len(p); i += 8 {
				v := r.Uint64()
				for j := 0; j < 8 && i+j < len(p); j++ {
					p[i+j] = byte(v >> (8 * j))
				}
			}
		}
		blocks += run / blk
		if _, err := w.Write(p); err != nil {
			return img, err
		}
		off += run
	}
	if err := w.Flush(); err != nil {
		return img, err
	}
	if err := f.Sync(); err != nil {
		return img, err
	}
	img.RawSize = size
	img.Zero = float64(zeroBlocks) / float64(blocks)
	if img.RawSum, err = rangeSum(img.Raw+".tmp", 1<<20, size-(2<<20)); err != nil {
		return img, err
	}
	if err := os.Rename(img.Raw+".tmp", img.Raw); err != nil {
		return img, err
	}
	// The reference zstd at its default level, multi-threaded, with a
	// content checksum: what an image pipeline publishes.
	if err := compressImage(&img, "zstd", "-q", "-f", "-T0", "-3", img.Raw, "-o", img.Zst); err != nil {
		return img, err
	}
	return img, os.WriteFile(meta, fmt.Appendf(nil, "%d %s %s %d %f\n", img.RawSize, img.RawSum, img.ZstSum, img.ZstSize, img.Zero), 0o644)
}

func fillText(r *rand.Rand, p []byte) {
	i := 0
	for i < len(p) {
		word := vocabulary[r.IntN(len(vocabulary))]
		i += copy(p[i:], word)
		if i < len(p) {
			if r.IntN(12) == 0 {
				p[i] = '\n'
			} else {
				p[i] = ' '
			}
			i++
		}
	}
}

// rangeSum is the sha256 of n bytes at off (n<0: to the end).
func rangeSum(path string, off, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = io.NewSectionReader(f, off, 1<<62)
	if n >= 0 {
		r = io.NewSectionReader(f, off, n)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 4<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pzstdVariant is img compressed with pzstd instead (cached next to it):
// independent frames of a few MiB each, each after a skippable frame
// holding its size, which anvil's writer decodes on several cores at
// once. The raw image is the same.
func pzstdVariant(img testImage) (testImage, error) {
	v := img
	v.Zst = strings.TrimSuffix(img.Zst, ".zst") + ".pz.zst"
	meta := v.Zst + ".meta"
	if b, err := os.ReadFile(meta); err == nil {
		if _, err := fmt.Sscan(string(b), &v.ZstSum, &v.ZstSize); err == nil {
			if st, err := os.Stat(v.Zst); err == nil && st.Size() == v.ZstSize {
				return v, nil
			}
		}
	}
	if err := compressImage(&v, "pzstd", "-q", "-f", "-3", "-p", "2", img.Raw, "-o", v.Zst); err != nil {
		return v, err
	}
	return v, os.WriteFile(meta, fmt.Appendf(nil, "%s %d\n", v.ZstSum, v.ZstSize), 0o644)
}

// compressImage runs the compressor writing img.Zst and records the
// file's checksum and size.
func compressImage(img *testImage, tool string, args ...string) error {
	if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", tool, err, out)
	}
	zsum, err := rangeSum(img.Zst, 0, -1)
	if err != nil {
		return err
	}
	st, err := os.Stat(img.Zst)
	if err != nil {
		return err
	}
	img.ZstSum, img.ZstSize = "sha256:"+zsum, st.Size()
	return nil
}
