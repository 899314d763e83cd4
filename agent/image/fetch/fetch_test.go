package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/backoff"
)

const (
	blobSize = 40 << 20
	mib      = 1 << 20
)

// testBlob is the image every test serves: 40 MiB of deterministic noise.
var testBlob = sync.OnceValue(func() []byte { return makeBlob(1, blobSize) })

func makeBlob(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

var modTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fast retries without sleeping through real backoff.
var fast = backoff.Policy{Base: time.Millisecond, Cap: 20 * time.Millisecond}

// origin serves a file as a real server would: ranges, If-Range,
// Last-Modified and, when set, an ETag.
type origin struct {
	blob []byte
	etag string
	mod  time.Time
}

func (o origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o.etag != "" {
		w.Header().Set("ETag", o.etag)
	}
	http.ServeContent(w, r, "image.raw", o.mod, bytes.NewReader(o.blob))
}

func defaultOrigin() origin { return origin{blob: testBlob(), etag: `"v1"`, mod: modTime} }

// checkLeaks fails the test if goroutines started during it outlive it.
// Call it first, so that its cleanup runs after the server's.
func checkLeaks(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines before the test, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// clientGoroutines lists the goroutines running this package's code or
// holding an HTTP client connection, leaving out the tests' own.
func clientGoroutines() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if (strings.Contains(g, "net/http.(*persistConn)") || strings.Contains(g, "agent/image/fetch.")) && !strings.Contains(g, "_test.go") {
			out = append(out, g)
		}
	}
	return out
}

// serve starts a loopback server and returns the image's URL. At cleanup,
// after the tests' streams are closed and before the server closes its
// side, no worker and no client connection may remain.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	return start(t, h, false).URL + "/image.raw"
}

func start(t testing.TB, h http.Handler, https bool) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	if https {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(func() {
		defer ts.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			left := clientGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d client goroutines outlive their stream:\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return ts
}

// requestedRange parses the request's "Range: bytes=first-[last]".
func requestedRange(r *http.Request, size int64) (first, last int64, ok bool) {
	spec, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
	if !ok {
		return 0, 0, false
	}
	a, b, _ := strings.Cut(spec, "-")
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		if last, err = strconv.ParseInt(b, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return first, min(last, size-1), true
}

// partial writes 206 headers for [first, last] and half of those bytes.
func partial(w http.ResponseWriter, o origin, first, last int64, withLength bool) {
	h := w.Header()
	h.Set("ETag", o.etag)
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(o.blob)))
	if withLength {
		h.Set("Content-Length", strconv.FormatInt(last-first+1, 10))
	}
	w.WriteHeader(http.StatusPartialContent)
	w.Write(o.blob[first : first+(last-first+1)/2])
	http.NewResponseController(w).Flush()
}

// reset drops the connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

func stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// tally counts requests by key.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

// add counts one more request for key and returns its number (1-based).
func (t *tally) add(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[key]++
	return t.m[key]
}

func (t *tally) get(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[key]
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.m {
		n += v
	}
	return n
}

func digest(b []byte) [32]byte { return sha256.Sum256(b) }

// readAll hashes the stream to the end.
func readAll(t *testing.T, s *Stream) ([32]byte, int64, error) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, s)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, n, err
}

func mustOpen(t *testing.T, ctx context.Context, u string, o Options) *Stream {
	t.Helper()
	s, err := Open(ctx, u, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func expectImage(t *testing.T, s *Stream) {
	t.Helper()
	sum, n, err := readAll(t, s)
	if err != nil {
		t.Fatalf("read: %v after %d bytes (stats %+v)", err, n, s.Stats())
	}
	if n != blobSize || sum != digest(testBlob()) {
		t.Fatalf("read %d bytes with sha256 %x; want %d bytes with %x", n, sum, blobSize, digest(testBlob()))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestParallel(t *testing.T) {
	for _, tc := range []struct {
		parallel, chunk int
	}{
		{0, 0}, // defaults: 4 × 8 MiB
		{1, 8 * mib},
		{8, mib},
		{3, 3*mib + 7}, // a short last chunk
		{4, 64 * mib},  // one chunk holds the whole file
	} {
		t.Run(fmt.Sprintf("parallel=%d/chunk=%d", tc.parallel, tc.chunk), func(t *testing.T) {
			checkLeaks(t)
			var reqs tally
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reqs.add(r.Header.Get("Range"))
				defaultOrigin().ServeHTTP(w, r)
			}))
			s := mustOpen(t, t.Context(), u, Options{Parallel: tc.parallel, ChunkSize: tc.chunk})
			if s.Size() != blobSize {
				t.Errorf("Size = %d, want %d", s.Size(), blobSize)
			}
			expectImage(t, s)
			chunk := cmp(tc.chunk, 8*mib)
			want := (blobSize + chunk - 1) / chunk
			st := s.Stats()
			if !st.Ranged || st.Chunks != want || st.Retries != 0 || st.Fetched != blobSize {
				t.Errorf("Stats = %+v, want Ranged, %d chunks, no retries, %d bytes", st, want, blobSize)
			}
			if reqs.total() != want {
				t.Errorf("%d requests, want %d (the first chunk is the probe)", reqs.total(), want)
			}
		})
	}
}

func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func TestWindowBoundsMemory(t *testing.T) {
	checkLeaks(t)
	var reqs tally
	u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.add(r.Header.Get("Range"))
		defaultOrigin().ServeHTTP(w, r)
	}))
	s := mustOpen(t, t.Context(), u, Options{Parallel: 2, ChunkSize: mib})
	// Nobody reads: Parallel+1 chunks fit in the window, then the workers
	// must wait for the reader.
	time.Sleep(300 * time.Millisecond)
	if n := reqs.total(); n != 3 {
		t.Errorf("%d chunks requested before the first Read, want Parallel+1 = 3", n)
	}
	expectImage(t, s)
}

func TestNoRangeSupport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		length   bool
		wantSize int64
	}{
		{"content-length", true, blobSize},
		{"chunked", false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var reqs tally
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reqs.add(r.Header.Get("Range"))
				if tc.length {
					w.Header().Set("Content-Length", strconv.Itoa(blobSize))
				}
				w.Write(testBlob())
			}))
			s := mustOpen(t, t.Context(), u, Options{})
			if s.Size() != tc.wantSize {
				t.Errorf("Size = %d, want %d", s.Size(), tc.wantSize)
			}
			expectImage(t, s)
			if st := s.Stats(); st.Ranged || st.Fetched != blobSize || reqs.total() != 1 {
				t.Errorf("Stats = %+v after %d requests, want one unranged request", st, reqs.total())
			}
		})
	}
}

// TestResume injects one fault into the first attempt of three chunks
// (the first, whose request is Open's probe, and two others).
func TestResume(t *testing.T) {
	starts := []int64{0, 16 * mib, 32 * mib}
	for _, tc := range []struct {
		name        string
		fault       func(w http.ResponseWriter, r *http.Request, o origin, first, last int64)
		wantResumes int
	}{
		{"connection reset", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			partial(w, o, first, last, true)
			reset(w)
		}, 3},
		{"short chunked body", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			partial(w, o, first, last, false)
		}, 3},
		{"body stalls", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			partial(w, o, first, last, true)
			stall(r)
		}, 3},
		{"headers stall", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			stall(r)
		}, 0},
		{"503", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, 0},
		{"408", func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			w.WriteHeader(http.StatusRequestTimeout)
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			o := defaultOrigin()
			var attempts tally
			faults := atomic.Int32{}
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				first, last, ok := requestedRange(r, blobSize)
				if ok && attempts.add(strconv.FormatInt(first, 10)) == 1 {
					for _, s := range starts {
						if first == s {
							faults.Add(1)
							tc.fault(w, r, o, first, last)
							return
						}
					}
				}
				o.ServeHTTP(w, r)
			}))
			s := mustOpen(t, t.Context(), u, Options{
				Backoff:       fast,
				IdleTimeout:   500 * time.Millisecond,
				HeaderTimeout: 500 * time.Millisecond,
			})
			expectImage(t, s)
			st := s.Stats()
			if faults.Load() != 3 || st.Retries < 3 || st.Resumes < tc.wantResumes {
				t.Errorf("%d faults, Stats = %+v; want 3 faults, ≥ 3 retries, ≥ %d resumes", faults.Load(), st, tc.wantResumes)
			}
			if st.Fetched < blobSize {
				t.Errorf("Fetched = %d, want ≥ %d", st.Fetched, blobSize)
			}
		})
	}
}

func TestRetryThenOK(t *testing.T) {
	checkLeaks(t)
	var n atomic.Int32
	u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1") // capped by Backoff.Cap
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			defaultOrigin().ServeHTTP(w, r)
		}
	}))
	start := time.Now()
	s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Open took %v: Retry-After not capped", d)
	}
	expectImage(t, s)
	if st := s.Stats(); st.Retries != 2 || st.Resumes != 0 {
		t.Errorf("Stats = %+v, want 2 retries", st)
	}
}

func TestPermanentStatus(t *testing.T) {
	t.Run("404 on open", func(t *testing.T) {
		checkLeaks(t)
		var reqs tally
		u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reqs.add("")
			http.NotFound(w, r)
		}))
		_, err := Open(t.Context(), u, Options{Backoff: fast})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusNotFound || se.Temporary() {
			t.Fatalf("Open = %v, want a 404 StatusError", err)
		}
		if !strings.Contains(err.Error(), u) || !strings.Contains(err.Error(), "404") {
			t.Errorf("error %q does not name the URL and status", err)
		}
		if reqs.total() != 1 {
			t.Errorf("%d requests, want 1 (no retries)", reqs.total())
		}
	})
	t.Run("403 on a chunk", func(t *testing.T) {
		checkLeaks(t)
		var reqs tally
		u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if first, _, _ := requestedRange(r, blobSize); first == 16*mib {
				reqs.add("16M")
				http.Error(w, "expired", http.StatusForbidden)
				return
			}
			defaultOrigin().ServeHTTP(w, r)
		}))
		s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
		_, n, err := readAll(t, s)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Fatalf("read = %v, want a 403 StatusError", err)
		}
		if n > 16*mib {
			t.Errorf("delivered %d bytes past the failed chunk", n)
		}
		if reqs.get("16M") != 1 {
			t.Errorf("chunk requested %d times, want 1", reqs.get("16M"))
		}
	})
}

// TestRetriesExhausted covers a chunk that never brings a byte: it is
// requested Retries+1 times, then the download fails naming the range and
// the attempts. Attempts that brought bytes before do not count.
func TestRetriesExhausted(t *testing.T) {
	const retries = 2
	for _, tc := range []struct {
		name string
		// progress answers the chunk's first request with half of it.
		progress bool
		fault    func(w http.ResponseWriter, r *http.Request, o origin, first, last int64)
		want     string
	}{
		{"503", false, func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, "bytes=8388608-16777215: 503 Service Unavailable"},
		{"headers, then no body", false, func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			h := w.Header()
			h.Set("ETag", o.etag)
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(o.blob)))
			h.Set("Content-Length", strconv.FormatInt(last-first+1, 10))
			w.WriteHeader(http.StatusPartialContent)
			http.NewResponseController(w).Flush()
			reset(w)
		}, "bytes=8388608-16777215: at byte 8388608"},
		{"half, then 500", true, func(w http.ResponseWriter, r *http.Request, o origin, first, last int64) {
			w.WriteHeader(http.StatusInternalServerError)
			// The resumed range starts where the received bytes ended: past
			// 8 MiB, by as much as the RST let through (up to half).
		}, "-16777215: 500 Internal Server Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			o := defaultOrigin()
			var reqs tally
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if first, last, _ := requestedRange(r, blobSize); first >= 8*mib && first < 16*mib {
					if reqs.add("8M") == 1 && tc.progress {
						partial(w, o, first, last, true)
						reset(w)
						return
					}
					tc.fault(w, r, o, first, last)
					return
				}
				o.ServeHTTP(w, r)
			}))
			s := mustOpen(t, t.Context(), u, Options{Backoff: fast, Retries: retries})
			_, n, err := readAll(t, s)
			if err == nil {
				t.Fatal("read succeeded, want a failure")
			}
			wantReqs := retries + 1
			if tc.progress {
				wantReqs++
			}
			for _, want := range []string{u, "bytes=", "gave up after 3 attempts in a row that received no data", tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if tc.progress && strings.Contains(err.Error(), "bytes=8388608-") {
				t.Errorf("error %q: the last attempt did not resume past the bytes received", err)
			}
			if n > 8*mib {
				t.Errorf("delivered %d bytes past the failed chunk", n)
			}
			if reqs.get("8M") != wantReqs {
				t.Errorf("%d attempts, want %d", reqs.get("8M"), wantReqs)
			}
		})
	}
}

// cutter serves blob as a server behind a flaky middlebox would: every
// reply is cut (TCP RST) after 0.25–3 MiB, an amount drawn from a
// generator seeded with seed and the range's first byte, so the same
// requests see the same cuts whatever order they arrive in.
type cutter struct {
	blob []byte
	seed uint64
	cuts atomic.Int32
}

func (c *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	size := int64(len(c.blob))
	first, last, ok := requestedRange(r, size)
	if !ok {
		first, last = 0, size-1
	}
	rnd := rand.New(rand.NewPCG(c.seed, uint64(first)))
	cut := mib/4 + rnd.Int64N(3*mib-mib/4+1)
	h := w.Header()
	h.Set("ETag", `"cut"`)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(last-first+1, 10))
	if ok {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
		w.WriteHeader(http.StatusPartialContent)
	}
	if last-first+1 <= cut {
		w.Write(c.blob[first : last+1])
		return
	}
	c.cuts.Add(1)
	w.Write(c.blob[first : first+cut])
	http.NewResponseController(w).Flush()
	reset(w)
}

// TestConnectionsCut covers a server that cuts every connection after
// 0.25–3 MiB: each attempt moves the download forward, so it completes
// however many attempts a chunk (or the single stream) takes.
func TestConnectionsCut(t *testing.T) {
	const size = 64 * mib
	for _, tc := range []struct {
		name string
		// ignoreFirstRange answers the first request with the whole file
		// (200), which makes the stream a single resumable one.
		ignoreFirstRange bool
	}{
		{"parallel ranges", false},
		{"one stream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			c := &cutter{blob: makeBlob(3, size), seed: 7}
			var n atomic.Int32
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 && tc.ignoreFirstRange {
					r.Header.Del("Range")
				}
				c.ServeHTTP(w, r)
			}))
			s := mustOpen(t, t.Context(), u, Options{Backoff: fast, ChunkSize: 8 * mib})
			sum, got, err := readAll(t, s)
			if err != nil {
				t.Fatalf("read: %v after %d bytes (stats %+v, %d cuts)", err, got, s.Stats(), c.cuts.Load())
			}
			if got != size || sum != digest(c.blob) {
				t.Fatalf("read %d bytes with sha256 %x; want %d bytes with %x", got, sum, size, digest(c.blob))
			}
			st := s.Stats()
			if st.Ranged == tc.ignoreFirstRange || st.Retries != int(c.cuts.Load()) || c.cuts.Load() < 20 {
				t.Errorf("Stats = %+v after %d cuts; want ranged=%v, one retry per cut, ≥ 20 cuts", st, c.cuts.Load(), !tc.ignoreFirstRange)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestChanged(t *testing.T) {
	v1 := defaultOrigin()
	other := makeBlob(2, blobSize)
	for _, tc := range []struct {
		name string
		v1   origin
		v2   http.Handler
	}{
		{"etag, If-Range honoured", v1, origin{blob: other, etag: `"v2"`, mod: modTime}},
		{"etag, If-Range ignored", v1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("If-Range")
			origin{blob: other, etag: `"v2"`, mod: modTime}.ServeHTTP(w, r)
		})},
		{"last-modified", origin{blob: testBlob(), mod: modTime}, origin{blob: other, mod: modTime.Add(time.Hour)}},
		{"grown", v1, origin{blob: append(testBlob()[:blobSize:blobSize], other[:mib]...), etag: v1.etag, mod: modTime}},
		{"shrunk", v1, origin{blob: testBlob()[:10*mib], etag: v1.etag, mod: modTime}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var n atomic.Int32
			u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					tc.v1.ServeHTTP(w, r)
					return
				}
				tc.v2.ServeHTTP(w, r)
			}))
			s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
			var got bytes.Buffer
			_, err := io.Copy(&got, s)
			if !errors.Is(err, ErrChanged) {
				t.Fatalf("read = %v, want ErrChanged", err)
			}
			if !bytes.Equal(got.Bytes(), testBlob()[:got.Len()]) {
				t.Errorf("the %d bytes delivered before the error are not the original's", got.Len())
			}
			if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrChanged) {
				t.Errorf("Read after the failure = %v, want ErrChanged again", err)
			}
		})
	}
}

// TestSingleStream covers servers that ignore Range on the first request.
func TestSingleStream(t *testing.T) {
	o := defaultOrigin()
	// dropFirst answers the first request with the whole file, then resets
	// the connection after 10 MiB; later requests go to next.
	dropFirst := func(acceptRanges bool, next http.Handler) http.Handler {
		var n atomic.Int32
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) > 1 {
				next.ServeHTTP(w, r)
				return
			}
			if acceptRanges {
				w.Header().Set("Accept-Ranges", "bytes")
			}
			w.Header().Set("ETag", o.etag)
			w.Header().Set("Content-Length", strconv.Itoa(blobSize))
			w.Write(o.blob[:10*mib])
			reset(w)
		})
	}
	t.Run("resumes with Range", func(t *testing.T) {
		checkLeaks(t)
		u := serve(t, dropFirst(true, o))
		s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
		expectImage(t, s)
		if st := s.Stats(); st.Ranged || st.Resumes != 1 || st.Retries != 1 {
			t.Errorf("Stats = %+v, want one stream resumed once", st)
		}
	})
	t.Run("no range support", func(t *testing.T) {
		checkLeaks(t)
		var later atomic.Int32
		u := serve(t, dropFirst(false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			later.Add(1)
			w.Write(o.blob)
		})))
		s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
		var got bytes.Buffer
		_, err := io.Copy(&got, s)
		if err == nil || !strings.Contains(err.Error(), "cannot resume") {
			t.Fatalf("read = %v, want a failure that cannot resume", err)
		}
		if got.Len() > 10*mib || !bytes.Equal(got.Bytes(), o.blob[:got.Len()]) {
			t.Errorf("delivered %d bytes, not a prefix of the image", got.Len())
		}
		if later.Load() != 0 {
			t.Errorf("%d more requests, want none", later.Load())
		}
	})
}

// TestRangeIgnoredLater covers a server that honours the first Range
// request and ignores later ones.
func TestRangeIgnoredLater(t *testing.T) {
	o := defaultOrigin()
	handler := func(gate <-chan struct{}, ignored *atomic.Int32) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			first, _, ok := requestedRange(r, blobSize)
			if !ok || first == 0 {
				o.ServeHTTP(w, r)
				return
			}
			<-gate
			w.Header().Set("ETag", o.etag)
			w.Header().Set("Content-Length", strconv.Itoa(blobSize))
			w.Write(o.blob)
			ignored.Add(1)
		})
	}
	t.Run("before any byte: one stream", func(t *testing.T) {
		checkLeaks(t)
		gate := make(chan struct{})
		close(gate)
		var ignored atomic.Int32
		u := serve(t, handler(gate, &ignored))
		s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
		r := s.src.(*ranged)
		for deadline := time.Now().Add(5 * time.Second); r.ctx.Err() == nil; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the workers never saw the ignored Range")
			}
		}
		expectImage(t, s)
		if st := s.Stats(); st.Ranged {
			t.Errorf("Stats = %+v, want the single stream", st)
		}
	})
	t.Run("after delivery: error", func(t *testing.T) {
		checkLeaks(t)
		gate := make(chan struct{})
		var ignored atomic.Int32
		u := serve(t, handler(gate, &ignored))
		s := mustOpen(t, t.Context(), u, Options{Backoff: fast})
		head := make([]byte, 1024)
		if _, err := io.ReadFull(s, head); err != nil {
			t.Fatal(err)
		}
		close(gate)
		var got bytes.Buffer
		_, err := io.Copy(&got, s)
		if !errors.Is(err, ErrRangeIgnored) {
			t.Fatalf("read = %v, want ErrRangeIgnored", err)
		}
		if !bytes.Equal(append(head, got.Bytes()...), o.blob[:len(head)+got.Len()]) {
			t.Error("delivered bytes are not a prefix of the image")
		}
	})
}

// stalled serves the first chunk and then stalls every other request.
func stalled(o origin) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first, last, ok := requestedRange(r, blobSize); ok && first > 0 {
			partial(w, o, first, last, true)
			stall(r)
			return
		}
		o.ServeHTTP(w, r)
	})
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		abort func(cancel context.CancelFunc, s *Stream)
		want  error
	}{
		{"context", func(cancel context.CancelFunc, s *Stream) { cancel() }, context.Canceled},
		{"Close", func(cancel context.CancelFunc, s *Stream) { s.Close() }, errClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			u := serve(t, stalled(defaultOrigin()))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s := mustOpen(t, ctx, u, Options{Parallel: 2, ChunkSize: mib})
			if _, err := io.ReadFull(s, make([]byte, mib)); err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(100*time.Millisecond, func() { tc.abort(cancel, s) })
			start := time.Now()
			_, err := s.Read(make([]byte, 4096))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Read returned after %v", d)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Read = %v, want %v", err, tc.want)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Run("single stream", func(t *testing.T) {
		checkLeaks(t)
		u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(blobSize))
			w.Write(testBlob()[:mib])
			http.NewResponseController(w).Flush()
			stall(r)
		}))
		ctx, cancel := context.WithCancel(t.Context())
		s := mustOpen(t, ctx, u, Options{})
		if _, err := io.ReadFull(s, make([]byte, mib)); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(100*time.Millisecond, cancel)
		if _, err := s.Read(make([]byte, 4096)); !errors.Is(err, context.Canceled) {
			t.Errorf("Read = %v, want context.Canceled", err)
		}
		s.Close()
	})
}

func TestHTTPS(t *testing.T) {
	checkLeaks(t)
	ts := start(t, defaultOrigin(), true)
	u := ts.URL + "/image.raw"

	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	s := mustOpen(t, t.Context(), u, Options{TLS: &tls.Config{RootCAs: roots}})
	expectImage(t, s)

	// An unknown CA is permanent: no retries, even with a long backoff.
	start := time.Now()
	_, err := Open(t.Context(), u, Options{Backoff: backoff.Policy{Base: time.Minute, Cap: time.Minute}})
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("Open without the CA = %v, want a certificate error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Open retried a certificate error for %v", d)
	}
}

func TestFile(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "image.raw")
	if err := os.WriteFile(path, testBlob(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, t.Context(), "file://"+path, Options{})
	if s.Size() != blobSize {
		t.Errorf("Size = %d", s.Size())
	}
	expectImage(t, s)
	if st := s.Stats(); st.Fetched != blobSize || st.Ranged {
		t.Errorf("Stats = %+v", st)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, errClosed) {
		t.Errorf("Read after Close = %v", err)
	}
}

func TestEmptyFile(t *testing.T) {
	checkLeaks(t)
	for _, u := range []string{
		// Go's file server answers a 200 with no body.
		serve(t, origin{blob: nil, etag: `"e"`, mod: modTime}),
		// nginx and Apache refuse any range of an empty file.
		serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes */0")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		})),
	} {
		s := mustOpen(t, t.Context(), u, Options{})
		if n, err := s.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("%s: Read = %d, %v; want EOF", u, n, err)
		}
		if s.Size() != 0 {
			t.Errorf("%s: Size = %d", u, s.Size())
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		url  string
		opts Options
		want error
	}{
		{"ftp://example.com/image.raw", Options{}, ErrUnsupportedScheme},
		{"image.raw", Options{}, ErrUnsupportedScheme},
		{"file://" + filepath.Join(dir, "missing"), Options{}, os.ErrNotExist},
		{"file://" + dir, Options{}, nil},
		{"file:image.raw", Options{}, nil},
		{"http:///image.raw", Options{}, nil},
		{"http://example.com/image.raw", Options{Client: http.DefaultClient, TLS: &tls.Config{}}, nil},
	} {
		s, err := Open(t.Context(), tc.url, tc.opts)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) = %v, want %v", tc.url, err, tc.want)
		}
	}
}

func TestSource(t *testing.T) {
	checkLeaks(t)
	u := serve(t, defaultOrigin())
	rc, size, err := Source(Options{})(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if size != blobSize {
		t.Errorf("size = %d", size)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{now.Add(time.Minute).Format(http.TimeFormat), time.Minute},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		h := http.Header{}
		if tc.v != "" {
			h.Set("Retry-After", tc.v)
		}
		if got := retryAfter(h, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{errIdle, true},
		{fmt.Errorf("GET x: %w", errShortBody), true},
		{&StatusError{Code: 500}, true},
		{&StatusError{Code: 429}, true},
		{&StatusError{Code: 408}, true},
		{&StatusError{Code: 404}, false},
		{&StatusError{Code: 401}, false},
		{fmt.Errorf("x: %w", ErrChanged), false},
		{fmt.Errorf("x: %w", ErrBadResponse), false},
		{context.Canceled, false},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
