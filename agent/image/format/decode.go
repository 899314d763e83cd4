package format

import (
	"bufio"
	"compress/bzip2"
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
}

// Stream is a detected, decompressing image stream.
type Stream struct {
	inner  *bufio.Reader
	Format Format
	close  func()
}

// Read implements io.Reader.
func (s *Stream) Read(p []byte) (int, error) { return s.inner.Read(p) }

// WriteTo writes the decoded image to w. Decoders that can write their
// output blocks directly (zstd, gzip, lz4) do so without an extra copy.
func (s *Stream) WriteTo(w io.Writer) (int64, error) { return s.inner.WriteTo(w) }

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
		return nil, fmt.Errorf("decode %s image header: %w", comp, err)
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
	return &Stream{inner: inner, Format: got, close: closeFn}, nil
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

func decoder(c Compression, r io.Reader, o DecodeOptions) (io.Reader, func(), error) {
	nop := func() {}
	switch c {
	case None:
		return r, nop, nil
	case Zstd:
		// The frame's xxhash is not checked: the image's sha256 over the
		// compressed bytes already proves them, and decoding is
		// deterministic.
		d, err := zstd.NewReader(r,
			zstd.WithDecoderConcurrency(o.Threads),
			zstd.IgnoreChecksum(true),
			zstd.WithDecoderMaxWindow(1<<31),
			zstd.WithDecoderLowmem(false))
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
		d, err := xz.NewReader(r)
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
