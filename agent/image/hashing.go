package image

import (
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// hashingReader reads the source ahead on its own goroutine, hashing as it
// goes, so the checksum costs the decoder no time: on two cores the hash
// and the decompression run side by side. At most depth blocks are read
// ahead.
type hashingReader struct {
	blocks chan []byte
	free   chan []byte
	// mu serialises Read; block is the buffer being consumed, cur its
	// unread rest.
	mu    sync.Mutex
	block []byte
	cur   []byte
	err   error // final error, valid once blocks is closed
	n     atomic.Int64
	done  chan struct{}
	stop  sync.Once
	quit  chan struct{}
}

func newHashingReader(src io.Reader, h hash.Hash, blockSize, depth int) *hashingReader {
	r := &hashingReader{
		blocks: make(chan []byte, depth),
		free:   make(chan []byte, depth+1),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
	}
	for range depth + 1 {
		r.free <- make([]byte, blockSize)
	}
	go r.run(src, h)
	return r
}

func (r *hashingReader) run(src io.Reader, h hash.Hash) {
	defer close(r.done)
	defer close(r.blocks)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.quit:
			return
		}
		n, err := src.Read(b)
		if n > 0 {
			h.Write(b[:n])
			r.n.Add(int64(n))
			select {
			case r.blocks <- b[:n]:
			case <-r.quit:
				return
			}
		} else {
			r.free <- b
		}
		if err != nil {
			r.err = err
			return
		}
	}
}

// Read implements io.Reader. It is safe for concurrent use (a decoder's
// goroutine may still be inside a read when Install drains the rest), and
// the digest does not depend on who reads: run hashes every byte in order.
func (r *hashingReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.block == nil {
		b, ok := <-r.blocks
		if !ok {
			return 0, r.err
		}
		r.block, r.cur = b, b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if len(r.cur) == 0 {
		r.free <- r.block[:cap(r.block)]
		r.block, r.cur = nil, nil
	}
	return n, nil
}

// Count is how many bytes were read from the source (and hashed).
func (r *hashingReader) Count() int64 { return r.n.Load() }

// Close stops the read-ahead; the caller closes the source to unblock a
// pending read.
func (r *hashingReader) Close() {
	r.stop.Do(func() { close(r.quit) })
}
