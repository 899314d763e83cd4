package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/klauspost/compress/zstd"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/image/format"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// gptImage is a 12 MiB raw disk image: a GPT with a root partition and
// half-random, half-zero contents.
func gptImage(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	d, err := diskfs.Create(p, 12<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 24000, Type: gpt.LinuxRootX86_64, Name: "root"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for off := 2 << 20; off < 10<<20; off += 128 << 10 {
		if r.IntN(2) == 0 {
			for i := off; i < off+128<<10; i++ {
				b[i] = byte(r.Uint32())
			}
		}
	}
	return b
}

func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.EncodeAll(b, nil)
}

// zstdFramesOf compresses b as independent frames of frame bytes each, as
// pzstd does.
func zstdFramesOf(t *testing.T, b []byte, frame int) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(b) > 0 {
		n := min(frame, len(b))
		out = e.EncodeAll(b[:n], out)
		b = b[n:]
	}
	return out
}

func sum256(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
func sum512(b []byte) string { s := sha512.Sum512(b); return "sha512:" + hex.EncodeToString(s[:]) }

func memSource(file []byte) Source {
	return func(context.Context, string) (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(file)), int64(len(file)), nil
	}
}

func dirtyDisk(t *testing.T, size int64) string {
	t.Helper()
	dev := loopdev.New(t, size)
	if err := os.WriteFile(dev, bytes.Repeat([]byte("OLD DATA"), int(size/8)), 0); err != nil {
		t.Fatal(err)
	}
	return dev
}

func head(t *testing.T, dev string, n int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInstallRawZstdOntoALoopDevice(t *testing.T) {
	img := gptImage(t)
	// One frame; and frames of 1 MiB, decoded several at once, with
	// the sequential fallback for a stream over the frame limit.
	for _, v := range []struct {
		name string
		file []byte
		o    format.DecodeOptions
	}{
		{"one frame", zstdOf(t, img), format.DecodeOptions{}},
		{"frames", zstdFramesOf(t, img, 1<<20), format.DecodeOptions{FrameWorkers: 3}},
		{"frames over the limit", zstdFramesOf(t, img, 1<<20), format.DecodeOptions{FrameWorkers: 2, MaxFrame: 256 << 10}},
	} {
		t.Run(v.name, func(t *testing.T) { installRawZstd(t, img, v.file, v.o) })
	}
}

func installRawZstd(t *testing.T, img, file []byte, o format.DecodeOptions) {
	for _, zeroed := range []bool{false, true} {
		var dev string
		if zeroed {
			dev = loopdev.New(t, 32<<20) // a fresh sparse backing file reads as zeroes
		} else {
			dev = dirtyDisk(t, 32<<20)
		}
		var calls int
		res, err := Install(context.Background(), Request{
			URL: "mem://image", Checksum: sum256(file), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
			Target: dev, Zeroed: zeroed,
		}, Options{Source: memSource(file), Decode: o, Progress: func(done, total uint64) { calls++ }})
		if err != nil {
			t.Fatalf("zeroed=%v: %v", zeroed, err)
		}
		if res.Format != (format.Format{Compression: format.Zstd, Payload: format.Raw}) || res.Fetched != int64(len(file)) || res.Image != int64(len(img)) {
			t.Errorf("result %+v", res)
		}
		if !res.Grow.Moved || !res.Grow.Grow {
			t.Errorf("partition table not fitted to the disk: %+v", res.Grow)
		}
		got := head(t, dev, len(img))
		// Everything but the GPT (which Grow rewrote) is the image.
		if !bytes.Equal(got[1<<20:len(img)-(1<<20)], img[1<<20:len(img)-(1<<20)]) {
			t.Errorf("zeroed=%v: disk contents differ from the image", zeroed)
		}
		if zeroed && res.Skipped == 0 {
			t.Errorf("zeroed target: no zero block skipped")
		}
		if calls == 0 {
			t.Error("no progress reported")
		}
	}
}

func TestInstallFailuresLeaveNothingBootable(t *testing.T) {
	img := gptImage(t)
	file := zstdOf(t, img)
	framed := zstdFramesOf(t, img, 1<<20)
	cut := framed[:len(framed)*2/3]
	corrupt := bytes.Clone(file)
	for i := len(corrupt) / 3; i < len(corrupt)/3+64; i++ {
		corrupt[i] ^= 0x5a
	}
	cases := []struct {
		name     string
		file     []byte
		checksum string
		format   anvilv1.ImageFormat
		want     error
		// touched says the disk was written, so its tables must be gone;
		// otherwise the old contents must be intact.
		touched bool
	}{
		{"checksum mismatch", file, sum256(append(bytes.Clone(file), 0)), anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, ErrChecksum, true},
		{"sha512 mismatch", file, sum512(img), anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, ErrChecksum, true},
		{"truncated stream", cut, sum256(cut), anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, nil, true},
		// One frame is decoded whole before any of it is written: the
		// outcome is the same as when the decoder fails after writing.
		{"truncated single frame", file[:len(file)/2], sum256(file[:len(file)/2]), anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, io.ErrUnexpectedEOF, true},
		{"corrupt single frame", corrupt, sum256(file), anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, ErrChecksum, true},
		{"declared raw, is zstd", file, sum256(file), anvilv1.ImageFormat_IMAGE_FORMAT_RAW, format.ErrMismatch, false},
		{"declared tar, is raw", file, sum256(file), anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD, format.ErrMismatch, false},
		{"qcow2 header", append([]byte("QFI\xfb"), make([]byte, 4096)...), sum256(nil), anvilv1.ImageFormat_IMAGE_FORMAT_UNSPECIFIED, format.ErrUnsupported, false},
		{"malformed checksum", file, "md5:abc", anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, ErrBadChecksumSpec, false},
		{"no checksum", file, "", anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, ErrBadChecksumSpec, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := dirtyDisk(t, 32<<20)
			_, err := Install(context.Background(), Request{URL: "mem://image", Checksum: c.checksum, Format: c.format, Target: dev},
				Options{Source: memSource(c.file)})
			if err == nil {
				t.Fatal("install succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			h := head(t, dev, 1<<20)
			switch {
			case c.touched && !bytes.Equal(h, make([]byte, 1<<20)):
				t.Errorf("failed install left the first MiB (partition table) in place: %q...", h[512:520])
			case c.touched && !strings.Contains(err.Error(), "destroyed"):
				t.Errorf("error does not say the tables were destroyed: %v", err)
			case !c.touched && !bytes.HasPrefix(h, []byte("OLD DATA")):
				t.Errorf("an install refused before writing changed the disk")
			}
		})
	}
}

func TestParseChecksum(t *testing.T) {
	for _, s := range []string{"sha256:" + strings.Repeat("ab", 32), "SHA512:" + strings.Repeat("0F", 64)} {
		if _, _, err := ParseChecksum(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "sha256", "sha256:xyz", "sha256:" + strings.Repeat("ab", 31), "sha1:" + strings.Repeat("ab", 20)} {
		if _, _, err := ParseChecksum(s); !errors.Is(err, ErrBadChecksumSpec) {
			t.Errorf("%q: err = %v", s, err)
		}
	}
}

func TestHashingReaderDeliversEveryByteInOrder(t *testing.T) {
	src := make([]byte, 5<<20+123)
	for i := range src {
		src[i] = byte(i * 7 % 251)
	}
	h := sha256.New()
	r := newHashingReader(bytes.NewReader(src), h, 64<<10, 3)
	defer r.Close()
	// Odd read sizes so blocks are consumed across several reads.
	var got []byte
	buf := make([]byte, 10000)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, src) || r.Count() != int64(len(src)) {
		t.Fatalf("read %d bytes (count %d), want the %d source bytes", len(got), r.Count(), len(src))
	}
	if want := sha256.Sum256(src); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("hash differs")
	}
}

// rootfsTar is a small root filesystem archive with a kernel.
func rootfsTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{
		{"etc/hostname", "web-1\n"},
		{"boot/vmlinuz-6.1.0-10-amd64", "kernel"},
		{"boot/initrd.img-6.1.0-10-amd64", "initrd"},
		{"usr/lib/data", strings.Repeat("data ", 100000)},
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestInstallRootfsTarballOntoALoopDevice(t *testing.T) {
	file := zstdOf(t, rootfsTar(t))
	o := Options{Source: memSource(file), Tar: rootfs.Installer(rootfs.Options{})}
	dev := loopdev.New(t, 1<<30)
	res, err := Install(context.Background(), Request{
		URL: "mem://rootfs", Checksum: sum256(file), Format: anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD, Target: dev, Zeroed: true,
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != (format.Format{Compression: format.Zstd, Payload: format.Tar}) || !strings.Contains(res.Tar, "manifest names kernel boot/vmlinuz-6.1.0-10-amd64") {
		t.Errorf("result %+v", res)
	}
	b, err := bootconfig.Lookup(dev)
	if err != nil {
		t.Fatal(err)
	}
	if b.Kernel.Path != "boot/vmlinuz-6.1.0-10-amd64" || !strings.HasPrefix(b.Cmdline, "root=PARTUUID=") {
		t.Errorf("boot lookup on the installed disk: %s", b.Describe())
	}

	// The same archive under a wrong checksum is extracted, then found
	// out: the disk must not keep a bootable partition table.
	dev = loopdev.New(t, 1<<30)
	_, err = Install(context.Background(), Request{
		URL: "mem://rootfs", Checksum: sum256(append(bytes.Clone(file), 0)), Format: anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD, Target: dev,
	}, o)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "destroyed") {
		t.Fatalf("err = %v, want a checksum mismatch that destroyed the tables", err)
	}
	if h := head(t, dev, 1<<20); !bytes.Equal(h, make([]byte, 1<<20)) {
		t.Error("the partition table of a rootfs install with a bad checksum survived")
	}
	if _, err := bootconfig.Lookup(dev); err == nil {
		t.Error("a kernel is still found on the disk of a failed install")
	}
}

// stallingSource gives the first n bytes of file, then blocks until it is
// closed: a server that stopped sending.
type stallingSource struct {
	r      io.Reader
	closed chan struct{}
	once   sync.Once
}

func (s *stallingSource) Read(p []byte) (int, error) {
	if n, err := s.r.Read(p); err == nil || n > 0 {
		return n, nil
	}
	<-s.closed
	return 0, errors.New("closed")
}

func (s *stallingSource) Close() error { s.once.Do(func() { close(s.closed) }); return nil }

// TestInstallFailsPromptlyWhileTheSourceStalls: the disk fails (here the
// target cannot be opened for writing) while the frame decoder waits for
// a source that stopped sending; Install returns at once instead of
// waiting for the source.
func TestInstallFailsPromptlyWhileTheSourceStalls(t *testing.T) {
	img := gptImage(t)
	file := zstdFramesOf(t, img, 1<<20)
	for _, c := range []struct {
		name   string
		format anvilv1.ImageFormat
		target string
		want   error
	}{
		// The target cannot be opened for writing.
		{"disk error", anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, t.TempDir(), syscall.EISDIR},
		// Refused after the first frame decoded: format.Open closes the
		// decoder itself.
		{"refused payload", anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD, loopdev.New(t, 32<<20), format.ErrMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			// One and a half frames, then nothing: the decoder waits
			// inside a frame.
			src := &stallingSource{r: bytes.NewReader(file[:len(file)/8]), closed: make(chan struct{})}
			done := make(chan error, 1)
			go func() {
				_, err := Install(context.Background(), Request{URL: "mem://image", Checksum: sum256(file), Format: c.format, Target: c.target},
					Options{Source: func(context.Context, string) (io.ReadCloser, int64, error) { return src, int64(len(file)), nil }})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, c.want) {
					t.Fatalf("install: %v, want %v", err, c.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Install still waits for the stalled source 10 s after it failed")
			}
		})
	}
}
