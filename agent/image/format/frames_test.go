package format

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestParseFrameHeader checks the header fields against RFC 8878
// §3.1.1.1: Frame_Header_Descriptor bits 7-6 Frame_Content_Size_Flag, 5
// Single_Segment_Flag, 3 reserved, 2 Content_Checksum_Flag, 1-0
// Dictionary_ID_Flag; then Window_Descriptor (absent in a single
// segment), Dictionary_ID (0, 1, 2 or 4 bytes), Frame_Content_Size (0, 1
// with the single segment flag, 2 (+256), 4 or 8 bytes, little endian).
func TestParseFrameHeader(t *testing.T) {
	magic := []byte{0x28, 0xb5, 0x2f, 0xfd}
	hdr := func(b ...byte) []byte { return append(bytes.Clone(magic), b...) }
	for _, c := range []struct {
		name string
		b    []byte
		want frameHeader
		err  error
	}{
		{"window only, no size", hdr(0x00, 0x58), frameHeader{length: 6, contentSize: -1, window: 2 << 20}, nil},
		{"checksum flag", hdr(0x04, 0x58), frameHeader{length: 6, contentSize: -1, window: 2 << 20, checksum: true}, nil},
		{"single segment, 1-byte size", hdr(0x20, 200), frameHeader{length: 6, contentSize: 200, window: 200}, nil},
		{"2-byte size is +256", hdr(0x60, 0x10, 0x00), frameHeader{length: 7, contentSize: 0x10 + 256, window: 0x10 + 256}, nil},
		{"4-byte size with a window", hdr(0x80, 0x58, 0x00, 0x00, 0x00, 0x80), frameHeader{length: 10, contentSize: 1 << 31, window: 2 << 20}, nil},
		{"8-byte size", hdr(0xe0, 1, 2, 3, 4, 5, 6, 7, 0), frameHeader{length: 13, contentSize: 0x0007060504030201, window: 0x0007060504030201}, nil},
		{"4-byte dictionary ID", hdr(0x23, 0xaa, 0xbb, 0xcc, 0xdd, 9), frameHeader{length: 10, contentSize: 9, window: 9}, nil},
		{"1-byte dictionary ID and window", hdr(0x01, 0x58, 0x07), frameHeader{length: 7, contentSize: -1, window: 2 << 20}, nil},
		{"reserved bit", hdr(0x08, 0x58), frameHeader{}, ErrCorrupt},
		{"not a frame", []byte("QFI\xfb\x00\x00"), frameHeader{}, ErrCorrupt},
		{"cut short", hdr(0x80, 0x58, 0x00), frameHeader{}, io.ErrUnexpectedEOF},
		{"only the magic", hdr(), frameHeader{}, io.ErrUnexpectedEOF},
	} {
		got, err := parseFrameHeader(c.b)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

// frames compresses each part as one frame, the klauspost encoder's
// output, with a skippable frame before every second one.
func frames(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i, p := range parts {
		if i%2 == 1 {
			out = binary.LittleEndian.AppendUint32(out, skippableMagic|uint32(i&0xf))
			out = binary.LittleEndian.AppendUint32(out, 5)
			out = append(out, "skip!"...)
		}
		out = e.EncodeAll(p, out)
	}
	return out
}

// TestReadFrame walks hand-made frames block by block (§3.1.1.2:
// Block_Header is 3 bytes, little endian: Last_Block bit 0, Block_Type
// bits 1-2 — 0 Raw, 1 RLE, 2 Compressed, 3 reserved — Block_Size bits
// 3-23; an RLE block's content is one byte).
func TestReadFrame(t *testing.T) {
	block := func(last bool, typ, size uint32) []byte {
		v := size<<3 | typ<<1
		if last {
			v |= 1
		}
		return []byte{byte(v), byte(v >> 8), byte(v >> 16)}
	}
	head := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58} // checksum flag, 2 MiB window
	var frame []byte
	frame = append(frame, head...)
	frame = append(frame, block(false, 0, 3)...)
	frame = append(frame, "raw"...)
	frame = append(frame, block(false, 1, 1000)...)
	frame = append(frame, 'x')
	frame = append(frame, block(true, 2, 2)...)
	frame = append(frame, 0xaa, 0xbb)
	frame = append(frame, 1, 2, 3, 4) // Content_Checksum
	skip := binary.LittleEndian.AppendUint32(nil, skippableMagic|7)
	skip = binary.LittleEndian.AppendUint32(skip, 3)
	skip = append(skip, "abc"...)
	stream := append(append(bytes.Clone(skip), frame...), frame...)

	r := bufio.NewReader(bytes.NewReader(stream))
	var got [][]byte
	for {
		f, skipped, err := readFrame(r, nil, 1<<20, DefaultMaxWindow)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !skipped {
			got = append(got, f)
		}
	}
	if len(got) != 2 || !bytes.Equal(got[0], frame) || !bytes.Equal(got[1], frame) {
		t.Fatalf("frames %q, want two of %q", got, frame)
	}

	for _, c := range []struct {
		name  string
		b     []byte
		limit int
		err   error
		kept  int // bytes returned with the error
	}{
		{"reserved block type", append(bytes.Clone(head), block(true, 3, 1)...), 1 << 20, ErrCorrupt, 9},
		{"block over 128 KiB", append(bytes.Clone(head), block(true, 2, 128<<10+1)...), 1 << 20, ErrCorrupt, 9},
		{"cut inside a block", frame[:12], 1 << 20, io.ErrUnexpectedEOF, 12},
		{"checksum missing", frame[:len(frame)-2], 1 << 20, io.ErrUnexpectedEOF, len(frame) - 2},
		{"garbage after a frame", []byte("garbage!"), 1 << 20, ErrCorrupt, 0},
		{"a stray byte", []byte{0x28}, 1 << 20, io.ErrUnexpectedEOF, 0},
		{"skippable frame cut short", skip[:9], 1 << 20, io.ErrUnexpectedEOF, 0},
		{"over the limit", frame, 20, errFrameTooLarge, 19},
	} {
		f, _, err := readFrame(bufio.NewReader(bytes.NewReader(c.b)), nil, c.limit, DefaultMaxWindow)
		if !errors.Is(err, c.err) || len(f) != c.kept {
			t.Errorf("%s: %d bytes, %v; want %d bytes, %v", c.name, len(f), err, c.kept, c.err)
		}
	}
}

// decodeAll runs Open on enc and returns what Read and WriteTo give.
func decodeAll(t *testing.T, enc []byte, o DecodeOptions) (viaRead, viaWriteTo []byte, errRead, errWriteTo error) {
	t.Helper()
	for i := range 2 {
		s, err := Open(bytes.NewReader(enc), Format{}, false, o)
		if err != nil {
			if i == 0 {
				errRead = err
			} else {
				errWriteTo = err
			}
			continue
		}
		var out bytes.Buffer
		if i == 0 {
			_, errRead = io.Copy(&out, struct{ io.Reader }{s}) // Read only
			viaRead = out.Bytes()
		} else {
			_, errWriteTo = s.WriteTo(&out)
			viaWriteTo = out.Bytes()
		}
		s.Close()
	}
	return
}

// TestFrameDecoder decodes many-frame streams in parallel and checks the
// output is the input, in order, whichever way it is read: frames within
// the limit (decoded in memory), frames whose decoded size is over it
// (decoded as a stream from their bytes), and a frame whose compressed
// size is over it (the rest of the stream decoded sequentially).
func TestFrameDecoder(t *testing.T) {
	raw := rawDisk(3 << 20)
	small := make([][]byte, 0, 24)
	for off := 0; off < len(raw); off += 128 << 10 {
		small = append(small, raw[off:off+128<<10])
	}
	for _, c := range []struct {
		name string
		enc  []byte
		o    DecodeOptions
	}{
		{"many small frames", frames(t, small...), DecodeOptions{FrameWorkers: 3}},
		{"one worker", frames(t, small...), DecodeOptions{FrameWorkers: 1}},
		{"a frame compressed beyond the limit, then more", frames(t, raw[:64<<10], raw[64<<10:2<<20], raw[2<<20:]), DecodeOptions{FrameWorkers: 2, MaxFrame: 512 << 10}},
		{"a single frame", frames(t, raw), DecodeOptions{}},
		{"a single frame beyond the limit", frames(t, raw), DecodeOptions{MaxFrame: 64 << 10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, w, errR, errW := decodeAll(t, c.enc, c.o)
			if errR != nil || errW != nil {
				t.Fatalf("Read: %v, WriteTo: %v", errR, errW)
			}
			if !bytes.Equal(r, raw) || !bytes.Equal(w, raw) {
				t.Fatalf("decoded %d and %d bytes, not the %d of the image", len(r), len(w), len(raw))
			}
		})
	}

	// Which way each frame went.
	text := bytes.Repeat([]byte("compressible root filesystem text\n"), 30000) // ~1 MiB, compresses to a few KiB
	for _, c := range []struct {
		name  string
		parts [][]byte
		max   int
		want  struct{ parallel, streamed, tail int }
		image []byte
	}{
		{"in memory", small, 1 << 20, struct{ parallel, streamed, tail int }{len(small), 0, 0}, raw},
		{"decoded size over the limit", [][]byte{raw[:64<<10], text, raw[64<<10 : 128<<10], text}, 512 << 10,
			struct{ parallel, streamed, tail int }{2, 2, 0}, bytes.Join([][]byte{raw[:64<<10], text, raw[64<<10 : 128<<10], text}, nil)},
		{"compressed size over the limit", [][]byte{raw[:64<<10], raw[64<<10 : 2<<20], text, raw[2<<20:]}, 512 << 10,
			struct{ parallel, streamed, tail int }{1, 0, 1}, bytes.Join([][]byte{raw[:64<<10], raw[64<<10 : 2<<20], text, raw[2<<20:]}, nil)},
	} {
		d, err := newFrameDecoder(bytes.NewReader(frames(t, c.parts...)), 2, c.max, DefaultMaxWindow, func(r io.Reader) (*zstd.Decoder, error) { return zstd.NewReader(r) })
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_, err = d.WriteTo(&out)
		d.Close()
		if err != nil || !bytes.Equal(out.Bytes(), c.image) {
			t.Errorf("%s: %d bytes, %v; want the %d of the image", c.name, out.Len(), err, len(c.image))
		}
		if d.seen != c.want {
			t.Errorf("%s: frames in memory, streamed, tail: %+v, want %+v", c.name, d.seen, c.want)
		}
	}

	// A corrupt frame in the middle: an error, and nothing of the frames
	// after it; the frames before it come out intact.
	enc := frames(t, small...)
	at := len(enc) / 2
	bad := bytes.Clone(enc)
	for i := at; i < at+32; i++ {
		bad[i] ^= 0x5a
	}
	r, w, errR, errW := decodeAll(t, bad, DecodeOptions{FrameWorkers: 3})
	if errR == nil || errW == nil {
		t.Fatalf("a corrupt frame decoded: Read %v, WriteTo %v", errR, errW)
	}
	for _, got := range [][]byte{r, w} {
		if len(got) == 0 || len(got) >= len(raw) || !bytes.Equal(got, raw[:len(got)]) {
			t.Errorf("%d bytes before the error, want a prefix of the image shorter than it", len(got))
		}
	}
	// Cut short inside a frame: io.ErrUnexpectedEOF. (A cut at a frame
	// boundary leaves a valid, shorter stream; the image's checksum
	// catches that.)
	for _, n := range []int{len(enc)/3 + 7, len(enc) - 1} {
		if _, _, errR, errW := decodeAll(t, enc[:n], DecodeOptions{FrameWorkers: 2}); !errors.Is(errR, io.ErrUnexpectedEOF) || !errors.Is(errW, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d of %d: Read %v, WriteTo %v; want io.ErrUnexpectedEOF", n, len(enc), errR, errW)
		}
	}
}

// TestFrameDecoderPzstd decodes what the real pzstd writes (a skippable
// frame with each frame's size, then the frame) and what zstd -T0
// writes (one frame announcing the whole size, over the limit: decoded
// as a stream).
func TestFrameDecoderPzstd(t *testing.T) {
	raw := rawDisk(20 << 20)
	file := filepath.Join(t.TempDir(), "raw")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tool := range [][]string{{"pzstd", "-3", "-p", "2", "-c"}, {"zstd", "-3", "-T0", "-c"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			t.Fatalf("%s not found (hack/install-deps.sh installs zstd, which ships pzstd): %v", tool[0], err)
		}
		enc, err := exec.Command(tool[0], append(tool[1:], file)...).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		br := bufio.NewReader(bytes.NewReader(enc))
		const limit = 16 << 20
		isFramed := framed(br, limit)
		if want := tool[0] == "pzstd"; isFramed != want {
			t.Errorf("%s: frame-parallel %v, want %v", tool[0], isFramed, want)
		}
		r, w, errR, errW := decodeAll(t, enc, DecodeOptions{FrameWorkers: 2, MaxFrame: limit})
		if errR != nil || errW != nil || !bytes.Equal(r, raw) || !bytes.Equal(w, raw) {
			t.Errorf("%s output: Read %d bytes %v, WriteTo %d bytes %v", tool[0], len(r), errR, len(w), errW)
		}
	}
}
