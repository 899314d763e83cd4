package format

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// frameDecoder decodes a zstd stream of many frames on several goroutines
// and hands the frames' contents out in stream order. A reader goroutine
// cuts the stream into whole frames (readFrame), workers decode them with
// DecodeAll, and Read or WriteTo return them in order. At most
// workers+2 frames are in memory at once, each at most about maxFrame
// bytes compressed and maxFrame decoded.
//
// A frame larger than that is decoded as a stream instead: one whose
// decoded size exceeds maxFrame, from its buffered bytes; one whose
// compressed size does, together with the rest of the stream, which is
// then decoded sequentially by a streaming decoder.
type frameDecoder struct {
	src      *bufio.Reader
	dec      *zstd.Decoder // DecodeAll, concurrently
	newSeq   func(io.Reader) (*zstd.Decoder, error)
	maxFrame int
	// maxWindow is the largest window a frame may ask for.
	maxWindow int64

	order chan *frameJob // in stream order, closed after the last
	jobs  chan *frameJob // to the workers
	free  chan *frameJob // the pool: bounds the frames in memory
	quit  chan struct{}
	stop  sync.Once
	wg    sync.WaitGroup // the workers (not the reader: see Close)

	// The consumer's side.
	cur  *frameJob
	rest []byte
	seq  *zstd.Decoder // a streaming decoder, for oversized frames and the tail
	err  error
	// seen counts the frames by how they were decoded.
	seen struct{ parallel, streamed, tail int }
}

// frameJob is one frame on its way through the decoder.
type frameJob struct {
	in, out []byte
	err     error
	done    chan struct{} // closed when out, err or stream are set
	// stream: the frame decodes beyond maxFrame; decode in as a stream.
	stream bool
	// tail: in holds the first bytes of an oversized frame; they and the
	// rest of the source are decoded as a stream.
	tail bool
}

// errStopped ends the reader goroutine's reads after Close.
var errStopped = errors.New("zstd frame decoder closed")

// stopReader fails every Read after quit is closed.
type stopReader struct {
	r    io.Reader
	quit chan struct{}
}

func (s stopReader) Read(p []byte) (int, error) {
	select {
	case <-s.quit:
		return 0, errStopped
	default:
		return s.r.Read(p)
	}
}

// newFrameDecoder decodes src with workers DecodeAll calls at once;
// newSeq makes the streaming decoder for oversized frames. A frame whose
// window exceeds maxWindow fails the stream with ErrWindowTooLarge.
func newFrameDecoder(src io.Reader, workers, maxFrame int, maxWindow int64, newSeq func(io.Reader) (*zstd.Decoder, error)) (*frameDecoder, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(workers),
		zstd.IgnoreChecksum(true),
		zstd.WithDecoderMaxMemory(uint64(maxFrame)),
		zstd.WithDecoderMaxWindow(uint64(min(int64(maxFrame), maxWindow))))
	if err != nil {
		return nil, err
	}
	pool := workers + 2
	quit := make(chan struct{})
	d := &frameDecoder{
		src: bufio.NewReaderSize(stopReader{src, quit}, 256<<10), dec: dec, newSeq: newSeq, maxFrame: maxFrame, maxWindow: maxWindow,
		order: make(chan *frameJob, pool),
		jobs:  make(chan *frameJob, pool),
		free:  make(chan *frameJob, pool),
		quit:  quit,
	}
	// Buffers of the largest size, allocated once: fresh memory from the
	// kernel, of which only the pages a frame fills become resident, and
	// never grown (growing by append left garbage of every intermediate
	// size: 2.5 times the resident memory, measured).
	for range pool {
		d.free <- &frameJob{in: make([]byte, 0, d.inLimit()), out: make([]byte, 0, maxFrame+2*maxBlockSize)}
	}
	d.wg.Add(workers)
	go d.read()
	for range workers {
		go d.work()
	}
	return d, nil
}

// inLimit is the largest compressed frame decoded in memory: a frame that
// does not compress is a little larger than its content (3 bytes per
// 128 KiB block, the header, the checksum).
func (d *frameDecoder) inLimit() int { return d.maxFrame + d.maxFrame/64 + 64 }

// read cuts the source into frames until its end, an error, or an
// oversized frame (which hands the source over to the consumer).
func (d *frameDecoder) read() {
	defer close(d.order)
	defer close(d.jobs)
	for {
		var j *frameJob
		select {
		case j = <-d.free:
		case <-d.quit:
			return
		}
		in, skip, err := readFrame(d.src, j.in, d.inLimit(), d.maxWindow)
		*j = frameJob{in: in, out: j.out, done: make(chan struct{})}
		switch {
		case skip:
			d.free <- j
			continue
		case errors.Is(err, io.EOF):
			d.free <- j
			return
		case errors.Is(err, errFrameTooLarge):
			j.tail = true
			close(j.done)
		case err != nil:
			j.err = err
			close(j.done)
		}
		select {
		case d.order <- j:
		case <-d.quit:
			return
		}
		if j.tail || j.err != nil {
			return // the consumer takes over, or stops
		}
		select {
		case d.jobs <- j:
		case <-d.quit:
			return
		}
	}
}

func (d *frameDecoder) work() {
	defer d.wg.Done()
	for {
		var j *frameJob
		var ok bool
		select {
		case j, ok = <-d.jobs:
		case <-d.quit:
			return
		}
		if !ok {
			return
		}
		j.out, j.err = d.dec.DecodeAll(j.in, j.out[:0])
		if errors.Is(j.err, zstd.ErrDecoderSizeExceeded) || errors.Is(j.err, zstd.ErrWindowSizeExceeded) {
			j.stream, j.err = true, nil
		}
		close(j.done)
	}
}

// next makes the next frame current. It returns io.EOF after the last.
func (d *frameDecoder) next() error {
	if d.cur != nil {
		d.free <- d.cur
		d.cur = nil
	}
	j, ok := <-d.order
	if !ok {
		return io.EOF
	}
	<-j.done
	d.cur = j
	switch {
	case j.err != nil:
		return j.err
	case j.tail:
		// The reader goroutine has stopped: the source is ours.
		d.seen.tail++
		return d.sequential(io.MultiReader(bytes.NewReader(j.in), d.src))
	case j.stream:
		d.seen.streamed++
		return d.sequential(bytes.NewReader(j.in))
	}
	d.seen.parallel++
	d.rest = j.out
	return nil
}

// sequential starts decoding r with the streaming decoder.
func (d *frameDecoder) sequential(r io.Reader) error {
	if d.seq == nil {
		s, err := d.newSeq(r)
		if err != nil {
			return err
		}
		d.seq = s
		return nil
	}
	return d.seq.Reset(r)
}

// Read implements io.Reader.
func (d *frameDecoder) Read(p []byte) (int, error) {
	for d.err == nil {
		if len(d.rest) > 0 {
			n := copy(p, d.rest)
			d.rest = d.rest[n:]
			return n, nil
		}
		if d.cur != nil && (d.cur.stream || d.cur.tail) {
			n, err := d.seq.Read(p)
			if errors.Is(err, io.EOF) && !d.cur.tail {
				err = nil
				d.cur.stream = false // done with this frame
			}
			if err != nil {
				d.err = err
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		d.err = d.next()
	}
	return 0, d.err
}

// WriteTo writes the rest of the decoded stream to w.
func (d *frameDecoder) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for d.err == nil {
		switch {
		case len(d.rest) > 0:
			n, err := w.Write(d.rest)
			total += int64(n)
			d.rest = d.rest[n:]
			if err != nil {
				return total, err
			}
		case d.cur != nil && (d.cur.stream || d.cur.tail):
			n, err := d.seq.WriteTo(w)
			total += n
			if err != nil {
				d.err = err
				return total, err
			}
			if d.cur.tail {
				d.err = io.EOF
				continue
			}
			d.cur.stream = false
		default:
			d.err = d.next()
		}
	}
	if errors.Is(d.err, io.EOF) {
		return total, nil
	}
	return total, d.err
}

// Close stops the goroutines and releases the decoders; reads after it
// fail with errStopped. It waits for the workers, not for the reader
// goroutine: that one may be inside a read of a source that stalled, and
// leaves as soon as the read returns (every later read of the source
// fails at once, see stopReader). So the caller may close the source, or
// read it itself, right after Close — the source must then allow
// concurrent reads, as agent/image's hashing reader does.
func (d *frameDecoder) Close() {
	d.stop.Do(func() {
		close(d.quit)
		d.wg.Wait()
		d.dec.Close()
		if d.seq != nil {
			d.seq.Close()
		}
		if d.err == nil || errors.Is(d.err, io.EOF) {
			d.err = errStopped
		}
	})
}
