package rootfs

import (
	"bytes"
	"io/fs"
	"sync"

	"github.com/diskfs/go-diskfs/backend"
)

// chunk is the granularity at which zeroSkipping remembers writes.
const chunk = 1 << 20

// zeroSkipping is a go-diskfs storage backend for a target known to read
// as zeroes: an all-zero write to a region nothing was written to yet is
// skipped, since the medium already holds those zeroes. Making an ext4 on
// a large disk writes its inode tables in full (go-diskfs has no lazy
// inode table initialisation); on an erased disk those writes cost
// nothing. Regions are tracked per MiB: once any byte of a MiB was
// written, every later write to it goes to the medium.
type zeroSkipping struct {
	backend.Storage
	w backend.WritableFile

	mu      sync.Mutex
	dirty   []uint64 // bitmap, one bit per chunk
	zero    []byte
	skipped int64
	written int64
}

var (
	_ backend.Storage      = (*zeroSkipping)(nil)
	_ backend.WritableFile = zeroSkippingFile{}
)

func newZeroSkipping(s backend.Storage, size int64) (*zeroSkipping, error) {
	w, err := s.Writable()
	if err != nil {
		return nil, err
	}
	chunks := (size + chunk - 1) / chunk
	return &zeroSkipping{Storage: s, w: w, dirty: make([]uint64, (chunks+63)/64), zero: make([]byte, 64<<10)}, nil
}

// Writable implements backend.Storage.
func (z *zeroSkipping) Writable() (backend.WritableFile, error) {
	return zeroSkippingFile{z}, nil
}

// Stats returns the bytes written to and skipped on the medium.
func (z *zeroSkipping) Stats() (written, skipped int64) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.written, z.skipped
}

type zeroSkippingFile struct{ z *zeroSkipping }

func (f zeroSkippingFile) WriteAt(p []byte, off int64) (int, error) {
	z := f.z
	if len(p) == 0 || off < 0 {
		return z.w.WriteAt(p, off)
	}
	z.mu.Lock()
	if !allZero(p, z.zero) {
		for c := off / chunk; c <= (off+int64(len(p))-1)/chunk && c/64 < int64(len(z.dirty)); c++ {
			z.dirty[c/64] |= 1 << (c % 64)
		}
		z.written += int64(len(p))
		z.mu.Unlock()
		return z.w.WriteAt(p, off)
	}
	// Zeroes: skip the parts over untouched MiBs, write the rest.
	type seg struct{ from, to int64 }
	var writes []seg
	for pos := off; pos < off+int64(len(p)); {
		end := min((pos/chunk+1)*chunk, off+int64(len(p)))
		if z.clean(pos/chunk, pos/chunk) {
			z.skipped += end - pos
		} else {
			z.written += end - pos
			if n := len(writes); n > 0 && writes[n-1].to == pos {
				writes[n-1].to = end
			} else {
				writes = append(writes, seg{pos, end})
			}
		}
		pos = end
	}
	z.mu.Unlock()
	for _, w := range writes {
		if n, err := z.w.WriteAt(p[w.from-off:w.to-off], w.from); err != nil {
			return int(w.from-off) + n, err
		}
	}
	return len(p), nil
}

// clean reports whether no byte of chunks [first, last] was written.
func (z *zeroSkipping) clean(first, last int64) bool {
	for c := first; c <= last; c++ {
		if c/64 >= int64(len(z.dirty)) || z.dirty[c/64]&(1<<(c%64)) != 0 {
			return false
		}
	}
	return true
}

func (f zeroSkippingFile) ReadAt(p []byte, off int64) (int, error) { return f.z.ReadAt(p, off) }
func (f zeroSkippingFile) Read(p []byte) (int, error)              { return f.z.Read(p) }
func (f zeroSkippingFile) Seek(o int64, w int) (int64, error)      { return f.z.Seek(o, w) }
func (f zeroSkippingFile) Close() error                            { return f.z.Close() }
func (f zeroSkippingFile) Stat() (fs.FileInfo, error)              { return f.z.Stat() }

func allZero(p []byte, zeroes []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroes))
		if !bytes.Equal(p[:n], zeroes[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
