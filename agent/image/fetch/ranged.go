package fetch

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// chunk is one Range request's bytes, [off, off+len(buf)).
type chunk struct {
	off  int64
	buf  []byte
	n    int   // bytes received; the worker's until done is closed
	err  error // set before done is closed
	done chan struct{}
}

// ranged fetches the file as parallel Range requests and delivers them in
// order. One dispatcher hands chunks to Parallel workers; a chunk needs one
// of Parallel+1 buffers, and the reader frees a buffer only once it has
// delivered all of it, so a slow reader stalls the downloads instead of
// growing memory.
type ranged struct {
	f      *fetcher
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	probe  atomic.Pointer[exchange] // the first chunk's reply, until a worker takes it

	order chan *chunk // dispatched chunks, in file order
	free  chan []byte // buffers not in use (nil: not allocated yet)

	cur *chunk // being delivered
	pos int
}

func newRanged(ctx context.Context, f *fetcher, probe *exchange) *ranged {
	ctx, cancel := context.WithCancelCause(ctx)
	window := f.o.Parallel + 1
	r := &ranged{
		f:      f,
		ctx:    ctx,
		cancel: cancel,
		order:  make(chan *chunk, window),
		free:   make(chan []byte, window),
	}
	for range window {
		r.free <- nil
	}
	r.probe.Store(probe)
	chunks := (f.size + int64(f.o.ChunkSize) - 1) / int64(f.o.ChunkSize)
	workers := int(min(int64(f.o.Parallel), chunks))
	jobs := make(chan *chunk)
	r.wg.Add(1 + workers)
	go r.dispatch(jobs)
	for range workers {
		go r.work(jobs)
	}
	return r
}

func (r *ranged) dispatch(jobs chan<- *chunk) {
	defer r.wg.Done()
	defer close(jobs)
	defer close(r.order)
	size, cs := r.f.size, int64(r.f.o.ChunkSize)
	for off := int64(0); off < size; off += cs {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.ctx.Done():
			return
		}
		n := int(min(cs, size-off))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		c := &chunk{off: off, buf: buf[:n], done: make(chan struct{})}
		// order has room: it never holds more chunks than there are
		// buffers.
		r.order <- c
		select {
		case jobs <- c:
		case <-r.ctx.Done():
			return
		}
	}
}

func (r *ranged) work(jobs <-chan *chunk) {
	defer r.wg.Done()
	for c := range jobs {
		c.err = r.fill(c)
		if c.err != nil {
			// Stop the others: the stream cannot get past this chunk.
			r.cancel(c.err)
		}
		close(c.done)
	}
}

// fill fetches c, resuming after its last good byte on transient failures.
// Only attempts that received nothing use up the retry budget.
func (r *ranged) fill(c *chunk) error {
	f := r.f
	var budget retryBudget
	for attempt := 0; ; attempt++ {
		first, last := c.off+int64(c.n), c.off+int64(len(c.buf))-1
		had := c.n
		var x *exchange
		if c.off == 0 && attempt == 0 {
			x = r.probe.Swap(nil)
		}
		var err error
		if x == nil {
			if x, err = f.send(r.ctx, first, last); err == nil {
				if err = f.check(x.resp, first, last); err != nil {
					x.close()
				}
			}
		}
		if err == nil {
			err = r.receive(x, c, first, last)
			x.close()
		}
		if err == nil {
			f.stats.chunks.Add(1)
			return nil
		}
		budget.received(c.n - had)
		if err = f.retry(r.ctx, &budget, err, c.n > 0); err != nil {
			return err
		}
	}
}

// receive reads x's body into the rest of c.
func (r *ranged) receive(x *exchange, c *chunk, first, last int64) error {
	for c.n < len(c.buf) {
		n, err := x.read(c.buf[c.n:])
		c.n += n
		r.f.stats.fetched.Add(int64(n))
		switch {
		case err == io.EOF && c.n < len(c.buf):
			return fmt.Errorf("GET %s %s: %w: got %d of %d bytes", r.f.url, rangeSpec(first, last), errShortBody, int64(c.n)-(first-c.off), last-first+1)
		case err == io.EOF:
			return nil
		case err != nil:
			return fmt.Errorf("GET %s %s: at byte %d: %w", r.f.url, rangeSpec(first, last), c.off+int64(c.n), err)
		}
	}
	return nil
}

func (r *ranged) Read(p []byte) (int, error) {
	for r.cur == nil || r.pos == len(r.cur.buf) {
		if err := r.advance(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur.buf[r.pos:])
	r.pos += n
	return n, nil
}

// advance frees the delivered chunk and waits for the next one.
func (r *ranged) advance() error {
	if r.cur != nil {
		r.free <- r.cur.buf
		r.cur = nil
	}
	if r.ctx.Err() != nil {
		return context.Cause(r.ctx)
	}
	var c *chunk
	select {
	case next, ok := <-r.order:
		if !ok {
			if r.ctx.Err() != nil {
				return context.Cause(r.ctx)
			}
			return io.EOF
		}
		c = next
	case <-r.ctx.Done():
		return context.Cause(r.ctx)
	}
	select {
	case <-c.done:
	case <-r.ctx.Done():
		return context.Cause(r.ctx)
	}
	if c.err != nil {
		return c.err
	}
	r.cur, r.pos = c, 0
	return nil
}

func (r *ranged) close() error {
	r.cancel(errClosed)
	r.wg.Wait()
	if x := r.probe.Swap(nil); x != nil {
		x.close()
	}
	// Drop the buffers, so that a closed Stream kept around holds none.
	r.cur = nil
	for len(r.free) > 0 {
		<-r.free
	}
	return nil
}
