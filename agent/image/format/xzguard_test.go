package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// xzOf builds a whole .xz stream by the format's rules (The .xz File
// Format 1.2): a Stream Header with CRC32 checks, one block whose
// 12-byte Block Header names LZMA2 with the Dictionary Size property
// dictCode (§5.3.1), content as one uncompressed LZMA2 chunk (control
// 0x01: dictionary reset, 16-bit big-endian size-1), the end marker,
// Block Padding, the CRC32 Check, the Index and the Stream Footer.
func xzOf(dictCode byte, content []byte) []byte {
	le32 := func(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
	flags := []byte{0x00, 0x01} // Check type CRC32
	out := append(bytes.Clone(xzMagic), flags...)
	out = le32(out, crc32.ChecksumIEEE(flags))

	bh := []byte{12/4 - 1, 0x00, lzma2FilterID, 0x01, dictCode, 0, 0, 0}
	bh = le32(bh, crc32.ChecksumIEEE(bh))
	data := []byte{0x01, byte((len(content) - 1) >> 8), byte(len(content) - 1)}
	data = append(append(data, content...), 0x00)
	block := append(bh, data...)
	unpadded := len(block)
	for len(block)%4 != 0 {
		block = append(block, 0)
	}
	block = le32(block, crc32.ChecksumIEEE(content))
	out = append(out, block...)

	index := []byte{0x00, 1}
	index = appendUvarint(appendUvarint(index, uint64(unpadded+4)), uint64(len(content)))
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	index = le32(index, crc32.ChecksumIEEE(index))
	out = append(out, index...)

	tail := le32(nil, uint32(len(index)/4-1))
	tail = append(tail, flags...)
	out = le32(out, crc32.ChecksumIEEE(tail))
	return append(append(out, tail...), 'Y', 'Z')
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestLZMA2Dict(t *testing.T) {
	for code, want := range map[byte]int64{0: 4 << 10, 1: 6 << 10, 22: 8 << 20, 30: 128 << 20, 31: 192 << 20, 39: 3 << 30, 40: 1<<32 - 1} {
		if got, err := lzma2Dict(code); err != nil || got != want {
			t.Errorf("code %d: %d, %v; want %d", code, got, err, want)
		}
	}
	if _, err := lzma2Dict(41); !errors.Is(err, ErrCorrupt) {
		t.Errorf("code 41: %v, want ErrCorrupt", err)
	}
}

func TestXzDictCap(t *testing.T) {
	content := rawDisk(3000)
	runCapCases(t, []capCase{
		{"8 MiB dictionary", xzOf(22, content), DecodeOptions{}, content, nil},
		{"at a lower cap", xzOf(22, content), DecodeOptions{MaxWindow: 8 << 20}, content, nil},
		{"over a lower cap", xzOf(22, content), DecodeOptions{MaxWindow: 4 << 20}, nil, []string{"8388608", "4194304"}},
		{"192 MiB dictionary", xzOf(31, content), DecodeOptions{}, nil, []string{"201326592", "134217728"}},
		{"4 GiB dictionary", xzOf(40, content), DecodeOptions{}, nil, []string{"4294967295", "134217728"}},
		{"in a second stream", append(append(xzOf(22, content), 0, 0, 0, 0), xzOf(40, content)...), DecodeOptions{}, nil, []string{"4294967295", "byte 3072"}},
		{"two streams", append(append(xzOf(22, content), 0, 0, 0, 0), xzOf(18, content)...), DecodeOptions{}, append(bytes.Clone(content), content...), nil},
	})
}

// TestXzDictRefusedBeforeAllocation: the decoder allocates a block's
// dictionary when it reads the block header; refused first, a 4 GiB one
// costs Open no more than its read buffers.
func TestXzDictRefusedBeforeAllocation(t *testing.T) {
	in := xzOf(40, rawDisk(3000))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Open(bytes.NewReader(in), Format{}, false, DecodeOptions{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrWindowTooLarge) {
		t.Fatalf("Open: %v, want ErrWindowTooLarge", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("refusing a 4 GiB dictionary allocated %d bytes, want < 4 MiB", alloc)
	}
}

// TestXzTool decodes what the real xz writes, one block or many, with
// every check type, and refuses a dictionary over the cap.
func TestXzTool(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatalf("xz not found (hack/install-deps.sh installs xz-utils): %v", err)
	}
	raw := rawDisk(1 << 20)
	for _, c := range []struct {
		args []string
		o    DecodeOptions
		dict int64 // > 0: refused, naming it
	}{
		{[]string{"-1"}, DecodeOptions{}, 0},
		{[]string{"-6", "--check=none"}, DecodeOptions{}, 0},
		{[]string{"-3", "--check=sha256"}, DecodeOptions{}, 0},
		{[]string{"-1", "--check=crc32", "-T2", "--block-size=256KiB"}, DecodeOptions{}, 0},
		// xz -6 uses an 8 MiB dictionary. (A real one over the default
		// cap would make xz itself allocate gigabytes to encode.)
		{[]string{"-6"}, DecodeOptions{MaxWindow: 4 << 20}, 8 << 20},
	} {
		t.Run(strings.Join(c.args, " ")+"/cap="+strconv.FormatInt(c.o.MaxWindow, 10), func(t *testing.T) {
			// From stdin, so that xz cannot shrink the dictionary to
			// the input's size.
			cmd := exec.Command("xz", append(c.args, "-c")...)
			cmd.Stdin = bytes.NewReader(raw)
			enc, err := cmd.Output()
			if err != nil {
				t.Fatalf("xz %s: %v", c.args, err)
			}
			s, err := Open(bytes.NewReader(enc), Format{Xz, Raw}, true, c.o)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(s)
				s.Close()
			}
			if c.dict == 0 {
				if err != nil || !bytes.Equal(got, raw) {
					t.Errorf("decoded %d bytes, %v; want the image", len(got), err)
				}
				return
			}
			if !errors.Is(err, ErrWindowTooLarge) || !strings.Contains(err.Error(), strconv.FormatInt(c.dict, 10)) {
				t.Errorf("err %v, want ErrWindowTooLarge naming %d", err, c.dict)
			}
		})
	}
}
