package erase

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/anvil-metal/anvil/test/loopdev"
)

// allZero reads the whole device back (buffered, after the methods flushed
// the block device's cache) and reports the first non-zero offset.
func allZero(t *testing.T, dev string) int {
	t.Helper()
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	return firstNonZero(b)
}

func TestEveryGenericMethodZeroesAndVerifies(t *testing.T) {
	const size = 24 << 20
	cases := []struct {
		name string
		run  func(ctx context.Context, dev string, p Progress) (Result, error)
	}{
		{"BLKZEROOUT", ZeroOut},
		{"overwrite x1", func(ctx context.Context, dev string, p Progress) (Result, error) { return Overwrite(ctx, dev, 1, p) }},
		{"overwrite x4", func(ctx context.Context, dev string, p Progress) (Result, error) { return Overwrite(ctx, dev, 4, p) }},
		// A loop device punches holes for BLKDISCARD: they read as zeroes.
		{"BLKDISCARD", func(ctx context.Context, dev string, p Progress) (Result, error) { return Discard(ctx, dev, false, p) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := loopdev.New(t, size)
			fill(t, dev, size)
			if err := VerifySample(dev, 64); err == nil {
				t.Fatal("verification passed on a device full of random data")
			}
			var last, total uint64
			res, err := c.run(context.Background(), dev, func(d, tot uint64) { last, total = d, tot })
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != size || last != size || total != size {
				t.Errorf("result %+v, last progress %d/%d, want %d", res, last, total, size)
			}
			if err := VerifySample(dev, 256); err != nil {
				t.Fatal(err)
			}
			if off := allZero(t, dev); off >= 0 {
				t.Fatalf("byte at %d not zero after %s", off, c.name)
			}
		})
	}
}

// zeroExcept is a broken erase: it zeroes the whole device but the byte
// range skip, the way an erase that "forgot" part of a disk would.
func zeroExcept(t *testing.T, dev string, size int64, skip Region) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range []Region{{0, skip.Off}, {skip.Off + skip.Len, size - skip.Off - skip.Len}} {
		if r.Len <= 0 {
			continue
		}
		if _, err := f.WriteAt(make([]byte, r.Len), r.Off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestVerificationCatchesASkippedErase writes the markers first, as the
// wipe does before a hardware erase, then runs an erase: a complete one
// must pass CheckGone, and one that skips any range as wide as the gap
// between two markers must fail it, wherever the range lies.
func TestVerificationCatchesASkippedErase(t *testing.T) {
	const size = 16 << 20
	const markers = 9
	gap := int64(size/4096-1) / (markers - 1) * 4096 // bytes between two markers
	cases := []struct {
		name   string
		erase  func(t *testing.T, dev string)
		caught bool
	}{
		{"complete overwrite", func(t *testing.T, dev string) {
			if _, err := Overwrite(context.Background(), dev, 2, nil); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"no erase at all", func(*testing.T, string) {}, true},
		{"skips the first block", func(t *testing.T, dev string) { zeroExcept(t, dev, size, Region{0, 4096}) }, true},
		{"skips the last block", func(t *testing.T, dev string) { zeroExcept(t, dev, size, Region{size - 4096, 4096}) }, true},
		{"skips one gap in the middle", func(t *testing.T, dev string) { zeroExcept(t, dev, size, Region{size/2 - gap/3, gap}) }, true},
		{"skips one gap, unaligned start", func(t *testing.T, dev string) { zeroExcept(t, dev, size, Region{gap + 1234, gap}) }, true},
		{"skips one gap near the end", func(t *testing.T, dev string) { zeroExcept(t, dev, size, Region{size - gap - 8192, gap}) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := loopdev.New(t, size)
			fill(t, dev, size)
			m, err := WriteMarkers(dev, markers)
			if err != nil {
				t.Fatal(err)
			}
			c.erase(t, dev)
			err = m.CheckGone()
			if c.caught && err == nil {
				t.Fatal("markers survived a broken erase, yet CheckGone reports them gone")
			}
			if !c.caught && err != nil {
				t.Fatalf("after a complete erase: %v", err)
			}
			// A full read-back verify agrees.
			if verr := Verify(dev, []Region{{0, size}}); (verr != nil) != c.caught {
				t.Fatalf("Verify of the whole device = %v, want caught=%v", verr, c.caught)
			}
		})
	}
}

func TestSecureDiscardOnALoopDeviceIsUnsupported(t *testing.T) {
	// Loop devices do not implement secure erase; the error must say so in
	// a way the caller can fall back on, and nothing may be touched.
	dev := loopdev.New(t, 8<<20)
	data := fill(t, dev, 8<<20)
	_, err := Discard(context.Background(), dev, true, nil)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("BLKSECDISCARD on a loop device: err = %v, want ErrUnsupported", err)
	}
	if got, _ := os.ReadFile(dev); !bytes.Equal(got, data) {
		t.Fatal("a refused secure discard changed the device")
	}
}

func TestOverwriteStopsWhenCancelled(t *testing.T) {
	dev := loopdev.New(t, 128<<20)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Overwrite(ctx, dev, 2, func(done, _ uint64) {
		if done >= 16<<20 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSampleRegionsAreAlignedAndInside(t *testing.T) {
	for _, size := range []int64{1 << 20, 3<<20 + 4096, 1 << 40} {
		for _, r := range SampleRegions(size, 100, 1) {
			if r.Off%4096 != 0 || r.Len <= 0 || r.Off+r.Len > size {
				t.Fatalf("size %d: region %+v", size, r)
			}
		}
	}
}
