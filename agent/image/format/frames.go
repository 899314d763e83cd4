package format

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The zstd frame layout (RFC 8878 §3.1), as far as the frame-parallel
// decoder needs it: enough to cut a stream into whole frames without
// decoding them. Every frame of a zstd stream is independent of the
// others, so a stream made of many frames (pzstd writes one per few MiB of
// input) can be decoded on several cores at once.

// ErrCorrupt is a compressed stream whose structure is broken.
var ErrCorrupt = errors.New("corrupt compressed stream")

// ErrWindowTooLarge is a compressed stream that asks for a larger window
// (zstd) or dictionary (xz) than DecodeOptions.MaxWindow allows.
var ErrWindowTooLarge = errors.New("compression window larger than allowed")

// errFrameTooLarge stops the frame reader at a frame larger than its
// limit; the caller decodes the rest of the stream sequentially.
var errFrameTooLarge = errors.New("zstd frame larger than the parallel decoder's limit")

const (
	zstdMagic      = 0xFD2FB528 // RFC 8878 §3.1.1 Magic_Number
	skippableMagic = 0x184D2A50 // §3.1.2, the low 4 bits are free
	// maxFrameHeader is magic (4) + descriptor (1) + window (1) +
	// dictionary ID (up to 4) + content size (up to 8).
	maxFrameHeader = 18
	// maxBlockSize is Block_Maximum_Size (§3.1.1.2.3): no block carries
	// more than 128 KiB.
	maxBlockSize = 128 << 10
)

// frameHeader is a zstd frame's header (§3.1.1.1).
type frameHeader struct {
	// length is the header's size in bytes, magic included.
	length int
	// contentSize is Frame_Content_Size, -1 when the frame does not say.
	contentSize int64
	// window is Window_Size (§3.1.1.1.2): the history a decoder keeps,
	// so the memory the frame asks for. A single-segment frame has no
	// Window_Descriptor; its window is its content size.
	window int64
	// checksum says a 4-byte Content_Checksum follows the last block.
	checksum bool
}

// parseFrameHeader parses the header at the start of b, which holds the
// first bytes of a zstd frame (maxFrameHeader, or fewer when the stream
// ends sooner).
func parseFrameHeader(b []byte) (frameHeader, error) {
	if len(b) < 5 {
		return frameHeader{}, fmt.Errorf("%w: zstd frame header cut short", io.ErrUnexpectedEOF)
	}
	if m := binary.LittleEndian.Uint32(b); m != zstdMagic {
		return frameHeader{}, fmt.Errorf("%w: %#08x is not a zstd frame's magic number", ErrCorrupt, m)
	}
	fhd := b[4] // Frame_Header_Descriptor
	if fhd&0x08 != 0 {
		return frameHeader{}, fmt.Errorf("%w: zstd frame header's reserved bit is set", ErrCorrupt)
	}
	single := fhd&0x20 != 0
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcsSize = 1
	}
	n := 5 + [4]int{0, 1, 2, 4}[fhd&3] + fcsSize
	if !single {
		n++ // Window_Descriptor
	}
	if len(b) < n {
		return frameHeader{}, fmt.Errorf("%w: zstd frame header cut short", io.ErrUnexpectedEOF)
	}
	h := frameHeader{length: n, contentSize: -1, checksum: fhd&0x04 != 0}
	if !single {
		// Window_Descriptor: Exponent (bits 7-3), Mantissa (bits 2-0).
		wd := b[5]
		windowLog := 10 + uint(wd>>3)
		base := int64(1) << windowLog
		h.window = base + base/8*int64(wd&7)
	}
	fcs := b[n-fcsSize : n]
	switch fcsSize {
	case 1:
		h.contentSize = int64(fcs[0])
	case 2:
		h.contentSize = int64(binary.LittleEndian.Uint16(fcs)) + 256
	case 4:
		h.contentSize = int64(binary.LittleEndian.Uint32(fcs))
	case 8:
		v := binary.LittleEndian.Uint64(fcs)
		if v > 1<<62 {
			return frameHeader{}, fmt.Errorf("%w: zstd frame content size %d", ErrCorrupt, v)
		}
		h.contentSize = int64(v)
	}
	if single {
		h.window = h.contentSize
	}
	return h, nil
}

// checkWindow refuses a frame whose window exceeds maxWindow, before a
// decoder allocates it: the header is not verified, and a 2 GiB window is
// a 2 GiB allocation.
func (h frameHeader) checkWindow(maxWindow int64) error {
	if h.window > maxWindow {
		return fmt.Errorf("%w: zstd frame window of %d bytes (%s) exceeds the cap of %d bytes (%s)", ErrWindowTooLarge, h.window, mibs(h.window), maxWindow, mibs(maxWindow))
	}
	return nil
}

// mibs formats n bytes in MiB for error messages.
func mibs(n int64) string {
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}

// readFrame reads the next frame of r into dst[:0] (grown as needed) and
// returns it. skippable frames (§3.1.2) are consumed and returned with
// skip set and no bytes. At the end of the stream it returns io.EOF. A
// frame whose window exceeds maxWindow fails with ErrWindowTooLarge,
// nothing of it consumed. A frame that would make dst longer than limit
// stops the read with errFrameTooLarge and the bytes of it consumed so
// far, which the caller must decode before the rest of r.
func readFrame(r *bufio.Reader, dst []byte, limit int, maxWindow int64) (frame []byte, skip bool, err error) {
	frame = dst[:0]
	head, err := r.Peek(maxFrameHeader)
	if len(head) == 0 && errors.Is(err, io.EOF) {
		return frame, false, io.EOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return frame, false, err
	}
	if len(head) >= 4 && binary.LittleEndian.Uint32(head)&^0xF == skippableMagic {
		if len(head) < 8 {
			return frame, false, fmt.Errorf("%w: skippable frame header cut short", io.ErrUnexpectedEOF)
		}
		n := 8 + int64(binary.LittleEndian.Uint32(head[4:]))
		if d, err := r.Discard(int(n)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame, false, fmt.Errorf("skippable frame of %d bytes ends after %d: %w", n, d, err)
		}
		return frame, true, nil
	}
	if len(head) < 4 {
		return frame, false, fmt.Errorf("%w: %d bytes after the last zstd frame", io.ErrUnexpectedEOF, len(head))
	}
	h, err := parseFrameHeader(head)
	if err != nil {
		return frame, false, err
	}
	if err := h.checkWindow(maxWindow); err != nil {
		return frame, false, err
	}
	take := func(n int) error {
		if len(frame)+n > limit {
			return errFrameTooLarge
		}
		at := len(frame)
		frame = grow(frame, n)
		if m, err := io.ReadFull(r, frame[at:]); err != nil {
			frame = frame[:at+m]
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("zstd frame cut short: %w", err)
		}
		return nil
	}
	if err := take(h.length); err != nil {
		return frame, false, err
	}
	for {
		if err := take(3); err != nil {
			return frame, false, err
		}
		bh := frame[len(frame)-3:]
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16 // Block_Header (§3.1.1.2)
		last, typ, size := v&1 != 0, v>>1&3, int(v>>3)
		switch typ {
		case 1: // RLE_Block: one byte, repeated size times
			size = 1
		case 3:
			return frame, false, fmt.Errorf("%w: reserved zstd block type", ErrCorrupt)
		}
		if size > maxBlockSize {
			return frame, false, fmt.Errorf("%w: zstd block of %d bytes (at most %d)", ErrCorrupt, size, maxBlockSize)
		}
		if err := take(size); err != nil {
			return frame, false, err
		}
		if last {
			break
		}
	}
	if h.checksum {
		if err := take(4); err != nil {
			return frame, false, err
		}
	}
	return frame, false, nil
}

// grow extends b by n bytes, reallocating when its capacity is short.
func grow(b []byte, n int) []byte {
	if len(b)+n <= cap(b) {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}
