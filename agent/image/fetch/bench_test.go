package fetch

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// BenchmarkFetchLoopback streams 256 MiB from a loopback server serving
// from memory, reading as the image pipeline does, in 1 MiB slices.
func BenchmarkFetchLoopback(b *testing.B) {
	const size = 256 << 20
	blob := makeBlob(3, size)
	for _, tc := range []struct {
		name string
		h    http.Handler
		opts Options
	}{
		{"parallel=1", origin{blob: blob, etag: `"b"`, mod: modTime}, Options{Parallel: 1}},
		{"parallel=4", origin{blob: blob, etag: `"b"`, mod: modTime}, Options{Parallel: 4}},
		{"no-ranges", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, bytes.NewReader(blob))
		}), Options{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			u := serve(b, tc.h)
			buf := make([]byte, 1<<20)
			b.SetBytes(size)
			for b.Loop() {
				s, err := Open(b.Context(), u, tc.opts)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, s, buf)
				s.Close()
				if err != nil || n != size {
					b.Fatal(fmt.Sprintf("read %d bytes: %v", n, err))
				}
			}
		})
	}
}
