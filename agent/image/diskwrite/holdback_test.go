package diskwrite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/test/loopdev"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// gptDisk is a disk image of n bytes that looks partitioned at both ends:
// "EFI PART" in LBA 1 and the last LBA, 0x55AA ending LBA 0, and a
// pattern everywhere else.
func gptDisk(n int) []byte {
	b := bytes.Repeat([]byte("OLD DATA"), n/8)
	copy(b[512:], "EFI PART")
	copy(b[n-512:], "EFI PART")
	b[510], b[511] = 0x55, 0xaa
	return b
}

// TestHoldBackImageIsByteIdenticalAfterClose: whatever the image's size
// (smaller than the head, ending unaligned, a whole number of buffers),
// the disk holds exactly the image after Close, and an earlier disk's
// backup GPT at the disk's end is gone.
func TestHoldBackImageIsByteIdenticalAfterClose(t *testing.T) {
	const size = 32 << 20
	for _, n := range []int{64 << 10, HoldHead + 4096 + 512, 2 << 20, 4 << 20, 20<<20 + 512} {
		for _, zeroed := range []bool{false, true} {
			dev := loopdev.New(t, size)
			if !zeroed {
				if err := os.WriteFile(dev, gptDisk(size), 0); err != nil {
					t.Fatal(err)
				}
			}
			img := image(n, uint64(n))
			st := write(t, dev, img, Options{Zeroed: zeroed, BufferSize: 1 << 20, HoldBack: true})
			got := readBack(t, dev, size)
			if !bytes.Equal(got[:n], img) {
				t.Fatalf("%d-byte image, zeroed=%v: disk differs from the image", n, zeroed)
			}
			if !bytes.Equal(got[size-HoldTail:], make([]byte, HoldTail)) {
				t.Errorf("%d-byte image, zeroed=%v: the disk's last MiB (an earlier backup GPT) was not zeroed", n, zeroed)
			}
			if st.Received != int64(n) || st.Written+st.Skipped != int64(n) {
				t.Errorf("%d-byte image, zeroed=%v: stats %+v", n, zeroed, st)
			}
		}
	}
}

// TestHoldBackWritesNoPartitionTableBeforeClose: a Writer fed the whole
// image but never closed (the stream was cut, the digest did not match,
// the process died) leaves a disk with neither the image's nor the old
// disk's partition tables, though the body reached the disk.
func TestHoldBackWritesNoPartitionTableBeforeClose(t *testing.T) {
	const size = 32 << 20
	for _, fed := range []int{HoldHead / 2, HoldHead + 4096, 5 << 20, 20 << 20} {
		dev := loopdev.New(t, size)
		if err := os.WriteFile(dev, gptDisk(size), 0); err != nil {
			t.Fatal(err)
		}
		img := gptDisk(20 << 20) // the new image is "partitioned" too
		o := Options{BufferSize: 1 << 20, Depth: 2, HoldBack: true}
		w, err := Open(dev, o)
		if err != nil {
			t.Fatal(err)
		}
		cut := errors.New("connection reset")
		src := io.MultiReader(bytes.NewReader(img[:fed]), iotestErr{cut})
		if _, err := w.ReadFrom(src); !errors.Is(err, cut) {
			t.Fatalf("fed %d: err = %v, want the source's", fed, err)
		}
		written := w.Stats().Written
		w.Abort(err)
		got := readBack(t, dev, size)
		if !bytes.Equal(got[:HoldHead], make([]byte, HoldHead)) {
			t.Errorf("fed %d: the first MiB is not all zero: %q", fed, got[504:520])
		}
		if !bytes.Equal(got[size-HoldTail:], make([]byte, HoldTail)) {
			t.Errorf("fed %d: the disk's last MiB is not all zero", fed)
		}
		if bytes.Contains(got, []byte("EFI PART")) {
			t.Errorf("fed %d: a GPT header signature is on the disk at %d", fed, bytes.Index(got, []byte("EFI PART")))
		}
		// The body streamed: at most the buffers in memory (the parked
		// one, the one filling, Depth queued) and the head are missing.
		if min := int64(fed - HoldHead - (o.Depth+2)*o.BufferSize); written < min {
			t.Errorf("fed %d: only %d bytes reached the disk before the cut, want at least %d", fed, written, min)
		}
	}
}

func TestHoldBackNeedsBuffersOfAtLeastTheTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{BufferSize: 256 << 10, HoldBack: true}); err == nil {
		t.Fatal("Open accepted 256 KiB buffers with a 1 MiB held-back tail")
	}
}

func TestHoldBackOntoARegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	img := image(6<<20+512, 5)
	clear(img[len(img)-(2<<20):]) // a zero tail that is skipped
	write(t, path, img, Options{Zeroed: true, BufferSize: 1 << 20, HoldBack: true})
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatalf("file holds %d bytes, differ from the %d-byte image", len(got), len(img))
	}
}

// TestCommitNeverLeavesHalfATable: at every sync point of the commit (where
// a power cut leaves the disk as it is), the GPT reader finds either no
// table or the whole image's table, never an unreadable one (the protect
// check would refuse that disk for good).
func TestCommitNeverLeavesHalfATable(t *testing.T) {
	const size = 32 << 20
	dev := loopdev.New(t, size)
	if err := os.WriteFile(dev, gptDisk(size), 0); err != nil {
		t.Fatal(err)
	}
	img := realGPTImage(t, 20<<20)
	var states []string
	o := Options{BufferSize: 1 << 20, HoldBack: true, commitSynced: func(step int) {
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = gptread.Read(f, size, 512)
		switch {
		case err == nil:
			states = append(states, fmt.Sprintf("%d:table", step))
		case errors.Is(err, gptread.ErrNoGPT):
			states = append(states, fmt.Sprintf("%d:none", step))
		default:
			t.Errorf("after commit step %d the disk holds half a table: %v", step, err)
		}
	}}
	w, err := Open(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadFrom(bytes.NewReader(img)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(states, " "); got != "0:none 1:table 2:table" {
		t.Fatalf("commit states %q, want no table until the primary header, then the table", got)
	}
}

// realGPTImage is an n-byte image with a valid GPT (one partition) over a
// pattern.
func realGPTImage(t *testing.T, n int64) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, bytes.Repeat([]byte("IMAGE DATA"), int(n)/10+1)[:n], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: uint64(n/512) - 2048, Type: gpt.LinuxFilesystem, Name: "root"}}}
	if err := tbl.Write(f, n); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
