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

func TestVerificationCatchesASkippedErase(t *testing.T) {
	const size = 16 << 20
	dev := loopdev.New(t, size)
	data := fill(t, dev, size)
	// Erase everything but one 4 KiB block in the middle: an erase that
	// "forgot" part of the disk.
	clear(data[:size/2])
	clear(data[size/2+4096:])
	if err := os.WriteFile(dev, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dev, []Region{{Off: 0, Len: size}}); err == nil {
		t.Fatal("a full verify missed the block that was not erased")
	}
	// A marker in the skipped block survives, so CheckGone catches it
	// wherever the sample lands.
	m, err := WriteMarkers(dev, 3) // first, middle, last block
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckGone(); err == nil {
		t.Fatal("markers on a device that was not erased are reported gone")
	}
	if _, err := Overwrite(context.Background(), dev, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckGone(); err != nil {
		t.Fatalf("after a full overwrite: %v", err)
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
