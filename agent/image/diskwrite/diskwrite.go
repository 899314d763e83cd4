// Package diskwrite writes an image stream onto a block device at the speed
// of the device: large page-aligned O_DIRECT writes, several in flight at
// once on disjoint ranges, and, on a target known to read as zeroes (after
// an erase or a discard), no write at all for all-zero blocks. Close flushes
// with fdatasync and makes the kernel re-read the partition table.
package diskwrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/anvil-metal/anvil/agent/blockdev"
)

// Options tune a Writer.
type Options struct {
	// Zeroed says the target already reads as zeroes, so all-zero blocks
	// are skipped instead of written.
	Zeroed bool
	// ZeroBlock is the granularity of zero detection (default 4 KiB; a
	// multiple of the device's alignment).
	ZeroBlock int
	// BufferSize is the size of each write buffer (default 4 MiB).
	BufferSize int
	// Depth is how many buffers are written concurrently (default 4).
	Depth int
}

func (o Options) withDefaults() Options {
	if o.BufferSize <= 0 {
		o.BufferSize = 4 << 20
	}
	if o.ZeroBlock <= 0 {
		o.ZeroBlock = 4096
	}
	if o.Depth <= 0 {
		o.Depth = 4
	}
	return o
}

// ErrTooLarge is an image that does not fit on the target.
var ErrTooLarge = errors.New("image larger than the target disk")

// Stats count what a Writer did.
type Stats struct {
	// Received is the image size so far (bytes accepted).
	Received int64
	// Written bytes reached the device; Skipped zero bytes did not need to.
	Written, Skipped int64
}

type chunk struct {
	buf blockdev.Buffer
	off int64
	n   int
}

// Writer writes an image sequentially from offset 0. Use ReadFrom (io.Copy
// does) to stream; Close must be called to flush.
type Writer struct {
	dev  *blockdev.Device
	o    Options
	zero []byte

	free chan blockdev.Buffer
	work chan chunk
	wg   sync.WaitGroup

	// cur is the buffer being filled (fill bytes so far), off the image
	// offset where it starts.
	cur  blockdev.Buffer
	fill int
	off  int64
	// ctx, when set by CopyContext, stops Write.
	ctx context.Context

	received         atomic.Int64
	written, skipped atomic.Int64

	errOnce sync.Once
	err     error
	failed  chan struct{}
	closed  bool
}

// Open opens the target (a block device, or a regular file in tests) for
// writing.
func Open(path string, o Options) (*Writer, error) {
	o = o.withDefaults()
	dev, err := blockdev.Open(path, os.O_WRONLY)
	if err != nil {
		return nil, err
	}
	if o.ZeroBlock%int(dev.Align) != 0 || o.BufferSize%o.ZeroBlock != 0 {
		dev.Close()
		return nil, fmt.Errorf("zero block %d must be a multiple of %s's alignment %d and divide the buffer size %d", o.ZeroBlock, path, dev.Align, o.BufferSize)
	}
	w := &Writer{
		dev: dev, o: o,
		zero:   make([]byte, o.ZeroBlock),
		free:   make(chan blockdev.Buffer, o.Depth+1),
		work:   make(chan chunk, o.Depth),
		failed: make(chan struct{}),
	}
	for range o.Depth + 1 {
		b, err := blockdev.NewBuffer(o.BufferSize)
		if err != nil {
			w.freeBuffers()
			dev.Close()
			return nil, err
		}
		w.free <- b
	}
	for range o.Depth {
		w.wg.Go(w.writeLoop)
	}
	return w, nil
}

// Size is the target's size in bytes.
func (w *Writer) Size() int64 { return w.dev.Size }

// Stats returns the counters; safe to call concurrently with writing.
func (w *Writer) Stats() Stats {
	return Stats{Received: w.received.Load(), Written: w.written.Load(), Skipped: w.skipped.Load()}
}

func (w *Writer) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		close(w.failed)
	})
}

// ReadFrom streams r onto the device until EOF.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := w.acquire(); err != nil {
			return total, err
		}
		n, err := fill(r, w.cur[w.fill:])
		w.fill += n
		total += int64(n)
		if w.fill == len(w.cur) {
			if err := w.dispatch(); err != nil {
				return total, err
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// Write implements io.Writer for producers that push bytes (a decoder's
// WriteTo): they are gathered into the aligned buffers, so the device still
// sees large aligned writes.
func (w *Writer) Write(p []byte) (int, error) {
	var total int
	for len(p) > 0 {
		if w.ctx != nil {
			if err := w.ctx.Err(); err != nil {
				return total, err
			}
		}
		if err := w.acquire(); err != nil {
			return total, err
		}
		n := copy(w.cur[w.fill:], p)
		w.fill += n
		total += n
		p = p[n:]
		if w.fill == len(w.cur) {
			if err := w.dispatch(); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// acquire makes sure a buffer is being filled.
func (w *Writer) acquire() error {
	if w.cur != nil {
		return nil
	}
	select {
	case w.cur = <-w.free:
		w.fill = 0
		return nil
	case <-w.failed:
		return w.err
	}
}

// dispatch hands the current buffer to the write goroutines.
func (w *Writer) dispatch() error {
	if w.cur == nil || w.fill == 0 {
		return nil
	}
	if w.dev.Block && w.off+int64(w.fill) > w.dev.Size {
		e := fmt.Errorf("%w: %s holds %d bytes, the image is at least %d", ErrTooLarge, w.dev.Path, w.dev.Size, w.off+int64(w.fill))
		w.fail(e)
		return e
	}
	select {
	case w.work <- chunk{buf: w.cur, off: w.off, n: w.fill}:
	case <-w.failed:
		return w.err
	}
	w.off += int64(w.fill)
	w.received.Add(int64(w.fill))
	w.cur, w.fill = nil, 0
	return nil
}

// fill reads until buf is full or r fails. Unlike io.ReadFull it passes
// the source's own io.ErrUnexpectedEOF (a truncated compressed stream)
// through instead of turning it into a short final block; only io.EOF ends
// the image.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (w *Writer) writeLoop() {
	for c := range w.work {
		select {
		case <-w.failed: // drain after a failure
		default:
			if err := w.writeChunk(c); err != nil {
				w.fail(err)
			}
		}
		w.free <- c.buf
	}
}

// writeChunk writes one buffer: the aligned part directly, each run of
// non-zero blocks as one write when the target is zeroed, and an unaligned
// tail (only the image's very end can be one) through a buffered descriptor.
func (w *Writer) writeChunk(c chunk) error {
	aligned := c.n - c.n%int(w.dev.Align)
	if !w.o.Zeroed {
		if err := w.pwrite(c.buf[:aligned], c.off); err != nil {
			return err
		}
	} else {
		zb := w.o.ZeroBlock
		start := -1 // start of the current non-zero run
		for i := 0; i < aligned; i += zb {
			end := min(i+zb, aligned)
			if bytes.Equal(c.buf[i:end], w.zero[:end-i]) {
				w.skipped.Add(int64(end - i))
				if start >= 0 {
					if err := w.pwrite(c.buf[start:i], c.off+int64(start)); err != nil {
						return err
					}
					start = -1
				}
				continue
			}
			if start < 0 {
				start = i
			}
		}
		if start >= 0 {
			if err := w.pwrite(c.buf[start:aligned], c.off+int64(start)); err != nil {
				return err
			}
		}
	}
	if aligned < c.n {
		return w.writeTail(c.buf[aligned:c.n], c.off+int64(aligned))
	}
	return nil
}

func (w *Writer) pwrite(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := w.dev.WriteAt(b, off)
		w.written.Add(int64(n))
		if err != nil {
			return fmt.Errorf("write %s [%d,%d): %w", w.dev.Path, off, off+int64(len(b)), err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// writeTail writes the last, unaligned bytes of an image without O_DIRECT.
func (w *Writer) writeTail(b []byte, off int64) error {
	f, err := os.OpenFile(w.dev.Path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s for the image tail: %w", w.dev.Path, err)
	}
	defer f.Close()
	n, err := f.WriteAt(b, off)
	w.written.Add(int64(n))
	if err != nil {
		return fmt.Errorf("write %s tail [%d,%d): %w", w.dev.Path, off, off+int64(len(b)), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s tail: %w", w.dev.Path, err)
	}
	return nil
}

// Close waits for every write, extends a regular file to the image size
// (skipped zero tails leave it short), syncs, re-reads the partition table
// and releases the device. It returns the first write error.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	dispatchErr := w.dispatch()
	if w.cur != nil {
		w.free <- w.cur
		w.cur = nil
	}
	w.closed = true
	close(w.work)
	w.wg.Wait()
	w.freeBuffers()
	err := w.err
	if err == nil {
		err = dispatchErr
	}
	if err == nil && !w.dev.Block {
		if st, e := w.dev.Stat(); e == nil && st.Size() < w.off {
			if e := w.dev.Truncate(w.off); e != nil {
				err = fmt.Errorf("extend %s to %d: %w", w.dev.Path, w.off, e)
			}
		}
	}
	if err == nil {
		err = w.dev.Sync()
	}
	if err == nil {
		err = w.dev.RereadPartitions()
	}
	if e := w.dev.Close(); err == nil && e != nil {
		err = fmt.Errorf("close %s: %w", w.dev.Path, e)
	}
	return err
}

// Abort stops writing after a failure elsewhere (bad checksum, context
// cancelled): queued writes are dropped and the device is closed.
func (w *Writer) Abort(cause error) {
	w.fail(cause)
	if w.cur != nil {
		w.free <- w.cur
		w.cur = nil
	}
	if !w.closed {
		w.closed = true
		close(w.work)
		w.wg.Wait()
		w.freeBuffers()
		_ = w.dev.Close()
	}
}

func (w *Writer) freeBuffers() {
	for {
		select {
		case b := <-w.free:
			b.Free()
		default:
			return
		}
	}
}

// CopyContext is io.Copy into w that stops when ctx is done. A source
// that can write itself out (io.WriterTo, as a decoder can) hands its
// output straight to w, saving a copy.
func CopyContext(ctx context.Context, w *Writer, r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok {
		w.ctx = ctx
		defer func() { w.ctx = nil }()
		return wt.WriteTo(w)
	}
	return w.ReadFrom(ctxReader{ctx, r})
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
