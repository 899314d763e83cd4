package format

import (
	"bufio"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// DecodeOptions tune the decompressors.
type DecodeOptions struct {
	// Threads bounds the decoders' concurrency. The default is 1 on
	// machines with up to two cores, where the image path's other stages
	// (fetch, hash, the kernel's writes) need the second core and zstd's
	// asynchronous decoding measured slower than its synchronous one (see
	// docs/benchmarks.md), else GOMAXPROCS up to 4.
	Threads int
	// BufferSize is the read buffer in front of the decompressor.
	BufferSize int
	// FrameWorkers is how many zstd frames are decoded at once when an
	// image consists of many frames (pzstd writes one per few MiB):
	// default GOMAXPROCS, at most 4.
	FrameWorkers int
	// MaxFrame is the largest zstd frame, compressed or decoded, that is
	// decoded in memory by a frame worker (default 32 MiB); larger ones
	// are decoded as a stream.
	MaxFrame int
	// MaxWindow is the largest history, in bytes, an image may make the
	// decoder keep: a zstd frame's Window_Size (RFC 8878 §3.1.1.1.2) or
	// an xz block's LZMA2 dictionary size (.xz File Format §5.3.1). The
	// header that asks for it is not verified until the whole image has
	// been hashed, so a larger one fails with ErrWindowTooLarge before
	// anything is allocated for it. Default DefaultMaxWindow.
	MaxWindow int64
}

// DefaultMaxWindow is MaxWindow's default, 128 MiB: the window of
// `zstd --long` (windowLog 27) and of `zstd --ultra -22`, 16 times the
// 8 MiB window of the lab's images (pzstd -19, windowLog 23), twice the
// 64 MiB dictionary of `xz -9`. The zstd tool's own decoder refuses more
// unless told --long or --memory.
const DefaultMaxWindow = 128 << 20

// Stream is a detected, decompressing image stream.
type Stream struct {
	inner     *bufio.Reader
	Format    Format
	close     func()
	maxWindow int64
}

// Read implements io.Reader.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.inner.Read(p)
	return n, explain(s.Format.Compression, err, s.maxWindow)
}

// WriteTo writes the decoded image to w. Decoders that can write their
// output blocks directly (zstd, gzip, lz4) do so without an extra copy.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	n, err := s.inner.WriteTo(w)
	return n, explain(s.Format.Compression, err, s.maxWindow)
}

// Close releases the decompressor (not the underlying source).
func (s *Stream) Close() error {
	if s.close != nil {
		s.close()
		s.close = nil
	}
	return nil
}

// Open detects the format of src, checks it against the declared one (when
// isDeclared) and returns the decompressed stream. Nothing is consumed from
// src beyond what the returned stream reads.
func Open(src io.Reader, declared Format, isDeclared bool, o DecodeOptions) (*Stream, error) {
	if o.BufferSize <= 0 {
		o.BufferSize = 1 << 20
	}
	if o.Threads <= 0 {
		o.Threads = 1
		if n := runtime.GOMAXPROCS(0); n > 2 {
			o.Threads = min(n, 4)
		}
	}
	if o.FrameWorkers <= 0 {
		o.FrameWorkers = min(runtime.GOMAXPROCS(0), 4)
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = 32 << 20
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = DefaultMaxWindow
	}
	br := bufio.NewReaderSize(src, max(o.BufferSize, SniffLen))
	head, eof, err := peek(br, SniffLen)
	if err != nil {
		return nil, fmt.Errorf("read image header: %w", err)
	}
	comp, err := Sniff(head, eof)
	if err != nil {
		return nil, err
	}
	if isDeclared && declared.Compression != comp {
		return nil, fmt.Errorf("%w: declared %s, detected %s compression", ErrMismatch, declared, comp)
	}
	dec, closeFn, err := decoder(comp, br, o)
	if err != nil {
		return nil, fmt.Errorf("open %s decoder: %w", comp, err)
	}
	inner := bufio.NewReaderSize(dec, max(o.BufferSize, SniffLen))
	ihead, ieof, err := peek(inner, SniffLen)
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("decode %s image header: %w", comp, explain(comp, err, o.MaxWindow))
	}
	payload, err := SniffPayload(ihead, ieof)
	if err != nil {
		closeFn()
		return nil, err
	}
	got := Format{comp, payload}
	if err := Check(declared, isDeclared, got); err != nil {
		closeFn()
		return nil, err
	}
	return &Stream{inner: inner, Format: got, close: closeFn, maxWindow: o.MaxWindow}, nil
}

// explain names the cap when a zstd decoder refused a frame's window: the
// streaming decoder checks every frame (the frame-parallel one and Open
// check them first, naming the window too), but says only
// ErrWindowSizeExceeded or ErrDecoderSizeExceeded.
func explain(c Compression, err error, maxWindow int64) error {
	if c == Zstd && (errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded)) {
		return fmt.Errorf("%w: a zstd frame's window exceeds the cap of %d bytes (%s): %w", ErrWindowTooLarge, maxWindow, mibs(maxWindow), err)
	}
	return err
}

// peek returns up to n leading bytes and whether the stream ended there.
func peek(br *bufio.Reader, n int) ([]byte, bool, error) {
	head, err := br.Peek(n)
	switch {
	case err == nil:
		return head, false, nil
	case errors.Is(err, io.EOF):
		return head, true, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return head, true, fmt.Errorf("truncated compressed stream: %w", err)
	}
	return nil, false, err
}

// framed tells whether a zstd stream looks like many frames, worth the
// frame-parallel decoder: it starts with a skippable frame (as pzstd's
// output does), or its first frame announces a content size of at most
// maxFrame, or none (then the frame decoder finds out, reading at most
// maxFrame bytes before it falls back to streaming). A first frame that
// announces more — `zstd -T0` of a file writes one frame with the whole
// size — is decoded as a stream from the start.
func framed(br *bufio.Reader, maxFrame int) bool {
	head, _ := br.Peek(maxFrameHeader)
	if len(head) >= 4 && binary.LittleEndian.Uint32(head)&^0xF == skippableMagic {
		return true
	}
	h, err := parseFrameHeader(head)
	return err == nil && h.contentSize <= int64(maxFrame)
}

// firstFrame parses the header of the first zstd frame in br's buffer,
// past any skippable frames (pzstd starts with one); found is false when
// the header is not in the buffer or does not parse (the decoder then
// reports the stream in its own words).
func firstFrame(br *bufio.Reader) (h frameHeader, found bool) {
	for off := 0; off+maxFrameHeader <= br.Size(); {
		head, _ := br.Peek(off + maxFrameHeader)
		if len(head) <= off {
			return frameHeader{}, false
		}
		b := head[off:]
		if len(b) >= 8 && binary.LittleEndian.Uint32(b)&^0xF == skippableMagic {
			off += 8 + int(binary.LittleEndian.Uint32(b[4:]))
			continue
		}
		h, err := parseFrameHeader(b)
		return h, err == nil
	}
	return frameHeader{}, false
}

func decoder(c Compression, r io.Reader, o DecodeOptions) (io.Reader, func(), error) {
	nop := func() {}
	switch c {
	case None:
		return r, nop, nil
	case Zstd:
		// The frame's xxhash is not checked: the image's sha256 over the
		// compressed bytes already proves them, and decoding is
		// deterministic.
		stream := func(r io.Reader) (*zstd.Decoder, error) {
			return zstd.NewReader(r,
				zstd.WithDecoderConcurrency(o.Threads),
				zstd.IgnoreChecksum(true),
				zstd.WithDecoderMaxWindow(uint64(o.MaxWindow)),
				zstd.WithDecoderLowmem(false))
		}
		br, ok := r.(*bufio.Reader)
		if ok {
			if h, found := firstFrame(br); found {
				if err := h.checkWindow(o.MaxWindow); err != nil {
					return nil, nil, err
				}
			}
		}
		if ok && framed(br, o.MaxFrame) {
			d, err := newFrameDecoder(br, o.FrameWorkers, o.MaxFrame, o.MaxWindow, stream)
			if err != nil {
				return nil, nil, err
			}
			return d, d.Close, nil
		}
		d, err := stream(r)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case Gzip:
		d, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return d, func() { _ = d.Close() }, nil
	case Xz:
		// The guard refuses a block whose dictionary exceeds MaxWindow
		// before the decoder reads (and allocates) it.
		d, err := xz.NewReader(newXzGuard(r, o.MaxWindow))
		if err != nil {
			return nil, nil, err
		}
		return d, nop, nil
	case Lz4:
		d := lz4.NewReader(r)
		if err := d.Apply(lz4.ConcurrencyOption(o.Threads)); err != nil {
			return nil, nil, err
		}
		return d, nop, nil
	case Bzip2:
		return bzip2.NewReader(r), nop, nil
	}
	return nil, nil, fmt.Errorf("%w: %s", ErrUnsupported, c)
}
