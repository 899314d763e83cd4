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
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Window_Descriptor bytes (RFC 8878 §3.1.1.1.2): Exponent in bits 7-3,
// Mantissa in bits 2-0; Window_Size = 2^(10+Exponent) plus Mantissa
// eighths of that.
const (
	wd2MiB   = 11 << 3    // 2^21
	wd128MiB = 17 << 3    // 2^27, the default cap
	wd192MiB = 17<<3 | 4  // 2^27 + 4/8 of it
	wd2GiB   = 21 << 3    // 2^31
	wdMax    = 31<<3 | 7  // 2^41 + 7/8 of it, the largest a header can say
	zstdMag  = 0xFD2FB528 // Magic_Number
)

// rawFrame is a zstd frame with the Window_Descriptor wd, no content
// size, and content as one Raw_Block (§3.1.1.2: Block_Header is
// Last_Block bit 0, Block_Type bits 1-2 (0: Raw), Block_Size bits 3-23).
func rawFrame(wd byte, content []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, zstdMag)
	b = append(b, 0x00, wd) // Frame_Header_Descriptor: nothing but a window
	bh := uint32(1) | uint32(len(content))<<3
	b = append(b, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(b, content...)
}

// singleSegmentFrame is a frame without a Window_Descriptor whose 4-byte
// Frame_Content_Size says size: its window is its content size. Its one
// Raw_Block holds content (shorter than size: the decoder must refuse the
// header before it gets there).
func singleSegmentFrame(size uint32, content []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, zstdMag)
	b = append(b, 0x80|0x20) // FCS_Field_Size 4, Single_Segment
	b = binary.LittleEndian.AppendUint32(b, size)
	bh := uint32(1) | uint32(len(content))<<3
	b = append(b, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(b, content...)
}

// skippable is a skippable frame (§3.1.2) with n bytes of user data, as
// pzstd writes before every frame.
func skippable(n int) []byte {
	b := binary.LittleEndian.AppendUint32(nil, skippableMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	return append(b, make([]byte, n)...)
}

func TestParseFrameHeaderWindow(t *testing.T) {
	for _, c := range []struct {
		wd   byte
		want int64
	}{
		{0x00, 1 << 10},
		{wd2MiB, 2 << 20},
		{wd2MiB | 5, 2<<20 + 5*(256<<10)},
		{wd128MiB, 128 << 20},
		{wd192MiB, 192 << 20},
		{wd2GiB, 2 << 30},
		{wdMax, 1<<41 + 7<<38},
	} {
		h, err := parseFrameHeader(rawFrame(c.wd, nil))
		if err != nil || h.window != c.want {
			t.Errorf("Window_Descriptor %#02x: window %d, %v; want %d", c.wd, h.window, err, c.want)
		}
	}
}

// decodeWith opens b and reads it to the end.
func decodeWith(b []byte, o DecodeOptions) ([]byte, error) {
	s, err := Open(bytes.NewReader(b), Format{}, false, o)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return io.ReadAll(s)
}

func TestZstdWindowCap(t *testing.T) {
	content := rawDisk(600)
	big := rawDisk(256 << 10)
	e, err := zstd.NewWriter(nil, zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A first frame announcing more than MaxFrame: the whole stream is
	// decoded by the streaming decoder.
	streamed := e.EncodeAll(big, nil)
	runCapCases(t, []capCase{
		{"window at the default cap", rawFrame(wd128MiB, content), DecodeOptions{}, content, nil},
		{"2 GiB window", rawFrame(wd2GiB, content), DecodeOptions{}, nil, []string{"2147483648", "134217728"}},
		{"window just over the cap", rawFrame(wd192MiB, content), DecodeOptions{}, nil, []string{"201326592", "134217728"}},
		{"largest window a header can say", rawFrame(wdMax, content), DecodeOptions{}, nil, []string{"4123168604160", "134217728"}},
		{"single segment of 2 GiB", singleSegmentFrame(1<<31, content), DecodeOptions{}, nil, []string{"2147483648", "134217728"}},
		{"after skippable frames", append(append(skippable(4), skippable(100)...), rawFrame(wd2GiB, content)...), DecodeOptions{}, nil, []string{"2147483648", "134217728"}},
		{"a lower cap", rawFrame(wd2MiB, content), DecodeOptions{MaxWindow: 1 << 20}, nil, []string{"2097152", "1048576"}},
		{"a lower cap, met", rawFrame(wd2MiB, content), DecodeOptions{MaxWindow: 2 << 20}, content, nil},
		// Later frames: the frame-parallel decoder checks each header.
		{"later frame, frame-parallel", append(append(rawFrame(wd2MiB, content), skippable(4)...), rawFrame(wd2GiB, content)...),
			DecodeOptions{}, nil, []string{"2147483648", "134217728"}},
		// The streaming decoder refuses it too; klauspost's error does
		// not carry the window, so only the cap is named.
		{"later frame, streamed", append(bytes.Clone(streamed), rawFrame(wd2GiB, content)...),
			DecodeOptions{MaxFrame: 64 << 10}, nil, []string{"134217728"}},
	})
}

// TestZstdWindowRefusedBeforeAllocation opens frames whose headers ask for
// 2 GiB: Open must refuse them having allocated a tiny fraction of that
// (its read buffer), not the window, nor the frame decoder's buffers.
func TestZstdWindowRefusedBeforeAllocation(t *testing.T) {
	for name, in := range map[string][]byte{
		"window descriptor": rawFrame(wd2GiB, rawDisk(600)),
		"single segment":    singleSegmentFrame(1<<31, rawDisk(600)),
		"behind skippable":  append(skippable(4), rawFrame(wd2GiB, rawDisk(600))...),
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := Open(bytes.NewReader(in), Format{}, false, DecodeOptions{})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrWindowTooLarge) {
				t.Fatalf("Open: %v, want ErrWindowTooLarge", err)
			}
			// The read buffer is 1 MiB (BufferSize's default).
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("refusing a 2 GiB window allocated %d bytes, want < 4 MiB", alloc)
			}
		})
	}
}

// TestZstdToolWindows decodes what the real zstd tools write: pzstd -19,
// which makes the lab's Debian and firewall images (images/debian/build.sh),
// declares an 8 MiB window; `zstd --long` (windowLog 27) a 128 MiB one,
// the default cap, and decodes; --long=28 is refused, as the zstd tool
// itself refuses it without --long=28 or --memory on decompression.
func TestZstdToolWindows(t *testing.T) {
	// More than 8 MiB, so that level 19 keeps its full window; a 4 KiB
	// block repeated, which level 19 compresses in a fraction of a second.
	raw := bytes.Repeat(rawDisk(4<<10), 9<<8)
	file := filepath.Join(t.TempDir(), "raw")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tool   []string
		window int64
		ok     bool
	}{
		{[]string{"pzstd", "-q", "-19", "-p", "4", "-c", file}, 8 << 20, true},
		// From stdin, so that the tool cannot shrink the window to the
		// input's size.
		{[]string{"zstd", "-q", "-1", "--long=27", "-c"}, 128 << 20, true},
		{[]string{"zstd", "-q", "-1", "--long=28", "-c"}, 256 << 20, false},
	} {
		t.Run(strings.Join(c.tool[:4], " "), func(t *testing.T) {
			if _, err := exec.LookPath(c.tool[0]); err != nil {
				t.Fatalf("%s not found (hack/install-deps.sh installs zstd, which ships pzstd): %v", c.tool[0], err)
			}
			cmd := exec.Command(c.tool[0], c.tool[1:]...)
			cmd.Stdin = bytes.NewReader(raw)
			enc, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v", c.tool, err)
			}
			h, found := firstFrame(bufioOf(enc))
			if !found || h.window != c.window {
				t.Fatalf("first frame's window %d (found %v), want %d", h.window, found, c.window)
			}
			got, err := decodeWith(enc, DecodeOptions{})
			switch {
			case c.ok && (err != nil || !bytes.Equal(got, raw)):
				t.Errorf("decoded %d bytes, %v; want the image", len(got), err)
			case !c.ok && (!errors.Is(err, ErrWindowTooLarge) || !strings.Contains(err.Error(), strconv.FormatInt(c.window, 10))):
				t.Errorf("err %v, want ErrWindowTooLarge naming %d", err, c.window)
			}
		})
	}
}

func bufioOf(b []byte) *bufio.Reader { return bufio.NewReaderSize(bytes.NewReader(b), 1<<20) }

// capCase is a decode that must succeed (want) or be refused for its
// window or dictionary, the error naming say.
type capCase struct {
	name string
	in   []byte
	o    DecodeOptions
	want []byte   // nil: refused
	say  []string // what the error must name (the window, the cap)
}

func runCapCases(t *testing.T, cases []capCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeWith(c.in, c.o)
			if c.want != nil {
				if err != nil || !bytes.Equal(got, c.want) {
					t.Fatalf("decoded %d bytes, %v; want the %d bytes of content", len(got), err, len(c.want))
				}
				return
			}
			if !errors.Is(err, ErrWindowTooLarge) {
				t.Fatalf("decoded %d bytes, err %v; want ErrWindowTooLarge", len(got), err)
			}
			for _, s := range c.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
		})
	}
}
