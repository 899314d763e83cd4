package format

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// rawDisk is a small "disk": an MBR boot signature, a GPT header at LBA 1,
// and incompressible-ish data.
func rawDisk(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 1024; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j) & 0x3f)
		}
	}
	b[510], b[511] = 0x55, 0xaa
	copy(b[512:], "EFI PART")
	return b
}

func tarball(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("root filesystem\n"), 100)
	if err := tw.WriteHeader(&tar.Header{Name: "etc/hostname", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, c Compression, p []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch c {
	case None:
		return p
	case Zstd:
		w, err = zstd.NewWriter(&buf)
	case Gzip:
		w = gzip.NewWriter(&buf)
	case Xz:
		w, err = xz.NewWriter(&buf)
	case Lz4:
		w = lz4.NewWriter(&buf)
	case Bzip2:
		// The standard library only decodes bzip2; use the real tool.
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(p)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bzip2 tool (hack/install-deps.sh installs it): %v", err)
		}
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var allCompressions = []Compression{None, Zstd, Gzip, Xz, Lz4, Bzip2}

func TestOpenDetectsEveryFormatAndDecodesIt(t *testing.T) {
	raw, tb := rawDisk(1<<20+512), tarball(t)
	for _, c := range allCompressions {
		for _, p := range []Payload{Raw, Tar} {
			want := Format{c, p}
			t.Run(want.String(), func(t *testing.T) {
				plain := raw
				if p == Tar {
					plain = tb
				}
				enc := compress(t, c, plain)
				for _, declared := range []bool{false, true} {
					s, err := Open(bytes.NewReader(enc), want, declared, DecodeOptions{})
					if err != nil {
						t.Fatalf("declared=%v: %v", declared, err)
					}
					if s.Format != want {
						t.Fatalf("detected %s, want %s", s.Format, want)
					}
					got, err := io.ReadAll(s)
					s.Close()
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, plain) {
						t.Fatalf("decoded %d bytes, differ from the %d-byte original", len(got), len(plain))
					}
				}
			})
		}
	}
}

func TestDeclaredFormatMustMatch(t *testing.T) {
	raw := rawDisk(64 << 10)
	cases := []struct {
		name     string
		image    []byte
		declared Format
	}{
		{"raw declared as raw+zstd", raw, Format{Zstd, Raw}},
		{"raw+gzip declared as raw", compress(t, Gzip, raw), Format{None, Raw}},
		{"raw+zstd declared as tar+zstd", compress(t, Zstd, raw), Format{Zstd, Tar}},
		{"tar declared as raw", tarball(t), Format{None, Raw}},
		{"raw+xz declared as raw+lz4", compress(t, Xz, raw), Format{Lz4, Raw}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(c.image), c.declared, true, DecodeOptions{})
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("err = %v, want ErrMismatch", err)
			}
		})
	}
}

func TestForeignContainersAreRefusedByName(t *testing.T) {
	for _, c := range []struct{ name, head string }{
		{"qcow2", "QFI\xfb\x00\x00\x00\x03"},
		{"VMDK", "KDMV\x01\x00\x00\x00"},
		{"VHDX", "vhdxfile\x00\x00"},
		{"zip", "PK\x03\x04\x14\x00"},
		{"VDI", strings.Repeat("<<< Oracle VM VirtualBox Disk Image >>>\n", 2)[:64] + "\x7f\x10\xda\xbe"},
	} {
		img := append([]byte(c.head), make([]byte, 4096)...)
		_, err := Open(bytes.NewReader(img), Format{None, Raw}, true, DecodeOptions{})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%s: err = %v, want ErrUnsupported naming %s", c.name, err, c.name)
		}
	}
}

func TestTruncatedAndCorruptStreamsFail(t *testing.T) {
	raw := rawDisk(512 << 10)
	for _, c := range []Compression{Zstd, Gzip, Xz, Lz4, Bzip2} {
		enc := compress(t, c, raw)
		t.Run(c.String()+"/truncated", func(t *testing.T) {
			s, err := Open(bytes.NewReader(enc[:len(enc)*2/3]), Format{}, false, DecodeOptions{})
			if err == nil {
				_, err = io.Copy(io.Discard, s)
				s.Close()
			}
			if err == nil {
				t.Fatal("a truncated stream decoded without error")
			}
		})
		t.Run(c.String()+"/corrupt", func(t *testing.T) {
			bad := bytes.Clone(enc)
			for i := len(bad) / 2; i < len(bad)/2+64; i++ {
				bad[i] ^= 0x5a
			}
			s, err := Open(bytes.NewReader(bad), Format{}, false, DecodeOptions{})
			var got []byte
			if err == nil {
				got, err = io.ReadAll(s)
				s.Close()
			}
			if err == nil && bytes.Equal(got, raw) {
				t.Fatal("corruption went unnoticed and the output is intact (test did not corrupt)")
			}
			if err == nil {
				t.Fatalf("a corrupt %s stream decoded without error into %d wrong bytes", c, len(got))
			}
		})
	}
}

func TestEmptyAndTinyImages(t *testing.T) {
	if _, err := Open(bytes.NewReader(nil), Format{}, false, DecodeOptions{}); !errors.Is(err, ErrTooShort) {
		t.Errorf("empty image: err = %v, want ErrTooShort", err)
	}
	s, err := Open(bytes.NewReader([]byte("tiny raw image")), Format{None, Raw}, true, DecodeOptions{})
	if err != nil {
		t.Fatalf("a 14-byte raw image: %v", err)
	}
	if got, _ := io.ReadAll(s); string(got) != "tiny raw image" {
		t.Errorf("read %q", got)
	}
}

func TestFromProtoCoversEveryEnumValue(t *testing.T) {
	for v, name := range anvilv1.ImageFormat_name {
		f, ok, err := FromProto(anvilv1.ImageFormat(v))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if v == 0 {
			if ok {
				t.Errorf("UNSPECIFIED is declared")
			}
			continue
		}
		if want := strings.ToLower(strings.TrimPrefix(name, "IMAGE_FORMAT_")); strings.ReplaceAll(f.String(), "+", "_") != want {
			t.Errorf("%s maps to %s", name, f)
		}
	}
	if _, _, err := FromProto(99); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown enum value: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	raw := rawDisk(8 << 10)
	for _, c := range []Compression{None, Zstd, Gzip, Xz, Lz4} {
		var buf bytes.Buffer
		switch c {
		case None:
			buf.Write(raw)
		case Zstd:
			w, _ := zstd.NewWriter(&buf)
			w.Write(raw)
			w.Close()
		case Gzip:
			w := gzip.NewWriter(&buf)
			w.Write(raw)
			w.Close()
		case Xz:
			w, _ := xz.NewWriter(&buf)
			w.Write(raw)
			w.Close()
		case Lz4:
			w := lz4.NewWriter(&buf)
			w.Write(raw)
			w.Close()
		}
		f.Add(buf.Bytes()[:min(buf.Len(), 2048)])
	}
	// Many frames with skippable frames between them (the frame-parallel
	// decoder's input), as pzstd writes.
	var many []byte
	e, _ := zstd.NewWriter(nil)
	for i := 0; i < 3; i++ {
		many = append(many, 0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4)
		many = e.EncodeAll(raw[i*1024:(i+1)*1024], many)
	}
	f.Add(many)
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("BZh9"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Open(bytes.NewReader(b), Format{}, false, DecodeOptions{Threads: 1, BufferSize: 4096})
		if err != nil {
			return
		}
		defer s.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 1<<20))
	})
}
