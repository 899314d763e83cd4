package diskwrite

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/anvil-metal/anvil/test/loopdev"
)

// image returns n bytes where about half the 4 KiB blocks (in runs) are
// zero and the rest random; the tail block is partly zero.
func image(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for off := 0; off < n; {
		run := (1 + r.IntN(64)) * 4096
		end := min(off+run, n)
		if r.IntN(2) == 0 {
			for i := off; i < end; i += 8 {
				v := r.Uint64()
				for j := 0; j < 8 && i+j < end; j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		}
		off = end
	}
	// A single non-zero byte inside an otherwise zero block must be written.
	b[n/2+17] = 1
	return b
}

func readBack(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, n)
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func write(t *testing.T, path string, img []byte, o Options) Stats {
	t.Helper()
	w, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(img)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.Stats()
}

func TestSparseWriterProducesAByteIdenticalDisk(t *testing.T) {
	const size = 32 << 20
	img := image(20<<20+512, 1) // ends on a 512-byte, not a 4 KiB, boundary
	for _, zeroed := range []bool{true, false} {
		dev := loopdev.New(t, size)
		if !zeroed {
			// A dirty disk: the writer must overwrite zero blocks too.
			if err := os.WriteFile(dev, bytes.Repeat([]byte{0xa5}, size), 0); err != nil {
				t.Fatal(err)
			}
		}
		st := write(t, dev, img, Options{Zeroed: zeroed, BufferSize: 1 << 20})
		if got := readBack(t, dev, len(img)); sha256.Sum256(got) != sha256.Sum256(img) {
			t.Fatalf("zeroed=%v: disk differs from the image", zeroed)
		}
		if st.Received != int64(len(img)) || st.Written+st.Skipped != int64(len(img)) {
			t.Errorf("zeroed=%v: stats %+v for a %d-byte image", zeroed, st, len(img))
		}
		if zeroed && st.Skipped < int64(len(img))/4 {
			t.Errorf("zeroed target: only %d of %d bytes skipped", st.Skipped, len(img))
		}
		if !zeroed && st.Skipped != 0 {
			t.Errorf("dirty target: %d bytes skipped, zero blocks left dirty", st.Skipped)
		}
	}
}

func TestSkippingOnADirtyDiskIsCaught(t *testing.T) {
	// The reason Zeroed must be true only after an erase: if a caller lies,
	// the disk is not the image. This checks the test above can fail.
	const size = 8 << 20
	img := image(4<<20, 2)
	dev := loopdev.New(t, size)
	if err := os.WriteFile(dev, bytes.Repeat([]byte{0xa5}, size), 0); err != nil {
		t.Fatal(err)
	}
	write(t, dev, img, Options{Zeroed: true, BufferSize: 1 << 20})
	if bytes.Equal(readBack(t, dev, len(img)), img) {
		t.Fatal("skipping zero blocks on a dirty disk gave the image; the comparison proves nothing")
	}
}

func TestImageLargerThanDiskFails(t *testing.T) {
	dev := loopdev.New(t, 4<<20)
	w, err := Open(dev, Options{BufferSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(w, bytes.NewReader(image(5<<20, 3)))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	w.Abort(err)
}

func TestRegularFileTargetGetsTheFullLength(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	img := image(6<<20, 4)
	clear(img[len(img)-(1<<20):]) // a zero tail that is skipped
	write(t, path, img, Options{Zeroed: true, BufferSize: 1 << 20})
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatalf("file holds %d bytes, differ from the %d-byte image", len(got), len(img))
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	n := min(len(p), f.n)
	clear(p[:n])
	f.n -= n
	return n, nil
}

func TestSourceErrorIsReturned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, Options{BufferSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, &failingReader{n: 3 << 20}); err == nil || err.Error() != "connection reset by peer" {
		t.Fatalf("err = %v, want the source's error", err)
	}
	w.Abort(err)
}

func TestTruncatedSourceIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, Options{BufferSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// A decoder reports a truncated stream with io.ErrUnexpectedEOF; it must
	// not be mistaken for the image's end.
	src := io.MultiReader(bytes.NewReader(make([]byte, 100)), iotestErr{io.ErrUnexpectedEOF})
	if _, err := w.ReadFrom(src); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	w.Abort(err)
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
