// Package diskwrite writes an image stream onto a block device at the speed
// of the device: large page-aligned O_DIRECT writes, several in flight at
// once on disjoint ranges, and, on a target known to read as zeroes (after
// an erase or a discard), no write at all for all-zero blocks. Close flushes
// with fdatasync and makes the kernel re-read the partition table.
//
// With Options.HoldBack the Writer is crash-safe: the regions firmware and
// the kernel read first never reach the disk before the caller has
// verified the whole image. Open zeroes the target's first and last MiB
// (an earlier install's protective MBR, primary GPT header and entries,
// and the backup GPT at the disk's end) and syncs; the image's first MiB
// (LBA 0 up to 1 MiB: the MBR with its boot code, the primary GPT header
// and entry array, any BIOS boot code there) and its last MiB (the
// image's backup GPT header and entries, which sit where the image ends)
// are kept in memory while the rest streams to the disk. Close, called
// only once the image verified, syncs that body, writes the held-back
// regions and syncs again; Abort drops them. A write cut at any point, by
// an error, a killed process or a power loss, leaves a disk on which
// neither a GPT nor an MBR can be found.
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
	// HoldBack keeps the image's first HoldHead and last HoldTail bytes in
	// memory until Close, after zeroing the target's own first and last
	// MiB in Open (see the package comment). It needs a BufferSize of at
	// least HoldTail. The caller calls Close only after it verified the
	// image, Abort otherwise.
	HoldBack bool

	// commitSynced, when set (tests), runs after each of the commit's
	// syncs (0: tail and body of the head, 1: primary header, 2: MBR).
	commitSynced func(step int)
}

// The regions HoldBack keeps in memory and zeroes on the target first.
const (
	// HoldHead covers LBA 0 through 2047 at 512-byte sectors (255 at
	// 4096): protective MBR and boot code, primary GPT header and entry
	// array, and the usual BIOS boot partition's start.
	HoldHead = 1 << 20
	// HoldTail covers the image's backup GPT header (its last LBA) and
	// backup entry array before it.
	HoldTail = 1 << 20
)

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

	// With HoldBack: head receives the image's first HoldHead bytes
	// instead of the disk, and last is the most recently filled buffer,
	// not yet handed to the write goroutines because it may hold the
	// image's last MiB.
	head blockdev.Buffer
	last *chunk
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
	buffers := o.Depth + 1
	if o.HoldBack {
		if o.BufferSize < HoldTail {
			dev.Close()
			return nil, fmt.Errorf("open %s: holding back the image's last %d bytes needs buffers of at least that size, not %d", path, HoldTail, o.BufferSize)
		}
		buffers++ // the parked last buffer
	}
	w := &Writer{
		dev: dev, o: o,
		zero:   make([]byte, o.ZeroBlock),
		free:   make(chan blockdev.Buffer, buffers),
		work:   make(chan chunk, o.Depth),
		failed: make(chan struct{}),
	}
	if o.HoldBack {
		if w.head, err = blockdev.NewBuffer(HoldHead); err != nil {
			dev.Close()
			return nil, err
		}
		if err := w.invalidate(); err != nil {
			w.head.Free()
			dev.Close()
			return nil, err
		}
	}
	for range buffers {
		b, err := blockdev.NewBuffer(o.BufferSize)
		if err != nil {
			w.freeBuffers()
			w.head.Free()
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

// invalidate zeroes the target's first and last MiB and syncs, so no
// partition table of an earlier install survives the streaming phase (the
// primary GPT in the first MiB, the backup GPT in the disk's last LBA).
// w.head is still all zero (fresh anonymous memory) and serves as source.
func (w *Writer) invalidate() error {
	size := w.dev.Size
	headEnd := min(int64(HoldHead), size)
	if err := w.pwriteRaw(w.head[:headEnd], 0); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidate, err)
	}
	if tail := max(size-HoldTail, headEnd); tail < size {
		tail -= tail % w.dev.Align
		tail = max(tail, headEnd)
		if err := w.pwriteRaw(w.head[:size-tail], tail); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidate, err)
		}
	}
	if err := w.dev.Sync(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidate, err)
	}
	return nil
}

// ErrInvalidate is a failure while zeroing the target's old partition
// tables in Open: the disk may hold half of them, so the caller must
// treat it as touched (and destroy its tables).
var ErrInvalidate = errors.New("invalidate partition tables")

// pwriteRaw writes b at off, through a buffered descriptor when the end is
// not aligned for direct I/O (a regular file of odd size).
func (w *Writer) pwriteRaw(b []byte, off int64) error {
	if len(b)%int(w.dev.Align) == 0 || !w.dev.Direct {
		for len(b) > 0 {
			n, err := w.dev.WriteAt(b, off)
			if err != nil {
				return fmt.Errorf("write %s [%d,%d): %w", w.dev.Path, off, off+int64(len(b)), err)
			}
			b, off = b[n:], off+int64(n)
		}
		return nil
	}
	f, err := os.OpenFile(w.dev.Path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", w.dev.Path, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write %s [%d,%d): %w", w.dev.Path, off, off+int64(len(b)), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", w.dev.Path, err)
	}
	return nil
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
	c := chunk{buf: w.cur, off: w.off, n: w.fill}
	if w.o.HoldBack {
		// Park the buffer: it holds the image's end if none follows.
		if w.last != nil {
			if err := w.send(*w.last); err != nil {
				return err
			}
		}
		w.last = &c
	} else if err := w.send(c); err != nil {
		return err
	}
	w.off += int64(w.fill)
	w.received.Add(int64(w.fill))
	w.cur, w.fill = nil, 0
	return nil
}

func (w *Writer) send(c chunk) error {
	select {
	case w.work <- c:
		return nil
	case <-w.failed:
		return w.err
	}
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
			if err := w.writeBody(c); err != nil {
				w.fail(err)
			}
		}
		w.free <- c.buf
	}
}

// writeBody writes a chunk of the streaming phase: with HoldBack, the
// part inside the image's first HoldHead bytes is copied to w.head
// instead (chunks start at multiples of the buffer size, so the rest
// starts aligned).
func (w *Writer) writeBody(c chunk) error {
	if w.o.HoldBack && c.off < HoldHead {
		k := min(c.n, int(HoldHead-c.off))
		copy(w.head[c.off:], c.buf[:k])
		if k == c.n {
			return nil
		}
		c = chunk{buf: c.buf[k:], off: c.off + int64(k), n: c.n - k}
	}
	return w.writeChunk(c)
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
//
// With HoldBack, Close is the commit: the caller calls it only after the
// image verified. It waits for the streamed body, writes the part of the
// last buffers before the held-back tail, syncs, writes the held-back head
// and tail, and syncs again.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if w.o.HoldBack {
		return w.commit()
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

// commit ends a HoldBack write (see Close).
func (w *Writer) commit() (err error) {
	w.closed = true
	defer func() {
		w.release()
		if e := w.dev.Close(); err == nil && e != nil {
			err = fmt.Errorf("close %s: %w", w.dev.Path, e)
		}
	}()
	var final []chunk
	if w.last != nil {
		final = append(final, *w.last)
	}
	if w.cur != nil && w.fill > 0 {
		if w.dev.Block && w.off+int64(w.fill) > w.dev.Size {
			w.fail(fmt.Errorf("%w: %s holds %d bytes, the image is at least %d", ErrTooLarge, w.dev.Path, w.dev.Size, w.off+int64(w.fill)))
		}
		final = append(final, chunk{buf: w.cur, off: w.off, n: w.fill})
		w.off += int64(w.fill)
		w.received.Add(int64(w.fill))
	}
	close(w.work)
	w.wg.Wait()
	if w.err != nil {
		return w.err
	}
	end := w.off
	headEnd := min(int64(HoldHead), end)
	tailStart := max(end-HoldTail, 0)
	tailStart = max(tailStart-tailStart%w.dev.Align, headEnd)
	// The body: everything before the tail that is still in memory.
	for _, c := range final {
		if n := min(int64(c.n), tailStart-c.off); n > 0 {
			if err := w.writeBody(chunk{buf: c.buf, off: c.off, n: int(n)}); err != nil {
				return err
			}
		}
	}
	if !w.dev.Block {
		if st, e := w.dev.Stat(); e == nil && st.Size() < end {
			if e := w.dev.Truncate(end); e != nil {
				return fmt.Errorf("extend %s to %d: %w", w.dev.Path, end, e)
			}
		}
	}
	if err := w.dev.Sync(); err != nil {
		return err
	}
	// Only now what makes the disk bootable, in an order that never leaves
	// half a partition table for a reader (firmware, or the agent's own
	// protect check) to find after a power cut: (1) the tail (backup GPT)
	// and the head but for its first two logical blocks, synced: no header
	// is on the disk yet; (2) the primary header, synced; (3) the MBR
	// (protective entry and boot code), synced. Steps 2 and 3 each change
	// one logical block, which a disk writes whole.
	for _, c := range final {
		if k := max(tailStart-c.off, 0); k < int64(c.n) {
			if err := w.writeChunk(chunk{buf: c.buf[k:], off: c.off + k, n: c.n - int(k)}); err != nil {
				return err
			}
		}
	}
	lbs := max(w.dev.LogicalBlock, 512)
	first := min((2*lbs+w.dev.Align-1)/w.dev.Align*w.dev.Align, headEnd)
	if first < 2*lbs || first%w.dev.Align != 0 {
		// A head shorter than MBR and header: no table to order.
		if err := w.writeChunk(chunk{buf: w.head, off: 0, n: int(headEnd)}); err != nil {
			return err
		}
		if err := w.dev.Sync(); err != nil {
			return err
		}
		return w.dev.RereadPartitions()
	}
	if headEnd > first {
		if err := w.writeChunk(chunk{buf: w.head[first:], off: first, n: int(headEnd - first)}); err != nil {
			return err
		}
	}
	blk, err := blockdev.NewBuffer(int(first))
	if err != nil {
		return err
	}
	defer blk.Free()
	copy(blk[2*lbs:], w.head[2*lbs:first])
	for i, step := range []struct{ from, to int64 }{{0, 0}, {lbs, 2 * lbs}, {0, lbs}} {
		copy(blk[step.from:step.to], w.head[step.from:step.to])
		var err error
		if i < 2 {
			err = w.pwriteRaw(blk, 0) // the first two states are not the image yet
		} else {
			err = w.writeChunk(chunk{buf: blk, off: 0, n: int(first)}) // counted once
		}
		if err != nil {
			return err
		}
		if err := w.dev.Sync(); err != nil {
			return err
		}
		if w.o.commitSynced != nil {
			w.o.commitSynced(i)
		}
	}
	return w.dev.RereadPartitions()
}

// release returns the held buffers to the pool and frees all memory.
func (w *Writer) release() {
	if w.cur != nil {
		w.free <- w.cur
		w.cur = nil
	}
	if w.last != nil {
		w.free <- w.last.buf
		w.last = nil
	}
	w.freeBuffers()
	w.head.Free()
	w.head = nil
}

// Abort stops writing after a failure elsewhere (bad checksum, context
// cancelled): queued writes are dropped and the device is closed. With
// HoldBack the held-back head and tail are dropped: the disk keeps no
// partition table.
func (w *Writer) Abort(cause error) {
	w.fail(cause)
	if !w.closed {
		w.closed = true
		close(w.work)
		w.wg.Wait()
		w.release()
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
