// Package fetch streams an OS image from an http, https or file URL as an
// io.Reader that delivers the file's bytes strictly in order; decompressing,
// hashing and writing are the next stages of the image pipeline.
//
// Over HTTP it uses range requests (RFC 9110 §14). Open sends one GET with
// "Range: bytes=0-<ChunkSize-1>" rather than a HEAD, which presigned
// object-store URLs refuse. A 206 reply gives the size (Content-Range), range
// support and the validator (a strong ETag, else Last-Modified) at once, and
// its body becomes the first chunk; the other chunks are fetched by
// Options.Parallel concurrent Range requests and reassembled in order through
// a window of Parallel+1 reused chunk buffers, so memory does not grow with
// the image. Every later request carries If-Range (RFC 9110 §13.1.5) with
// that validator, and every reply must be a 206 whose Content-Range matches
// the request exactly, so a file replaced on the server mid-download fails
// with ErrChanged instead of yielding a mixture of two images. A 200 reply to
// the first request means the server ignores ranges: the reply is streamed
// as it comes.
//
// A request that fails — connection reset, no response headers within
// HeaderTimeout, no body bytes for IdleTimeout, a body shorter than its
// range, 5xx, 408 or 429 — is retried after a capped, jittered exponential
// backoff (agent/backoff) and resumes from the last byte received. Only
// failures in a row that received nothing count against Options.Retries:
// an attempt that brought bytes restores the budget. Other 4xx replies are
// permanent (StatusError).
package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anvil-metal/anvil/agent/backoff"
)

// Errors callers branch on with errors.Is.
var (
	// ErrChanged is a file whose validator (ETag or Last-Modified) or size
	// changed on the server during the download.
	ErrChanged = errors.New("image changed on the server during the download")
	// ErrRangeIgnored is a server that answered a Range request with the
	// whole file after part of the image had been delivered.
	ErrRangeIgnored = errors.New("server ignored a Range request")
	// ErrBadResponse is a reply that does not match its request: a
	// Content-Range for other bytes, a content coding, a wrong length.
	ErrBadResponse = errors.New("response does not match the request")
	// ErrUnsupportedScheme is a URL that is not http, https or file.
	ErrUnsupportedScheme = errors.New("unsupported URL scheme")
)

var (
	errIdle          = errors.New("no data within the idle timeout")
	errHeaderTimeout = errors.New("no response headers within the header timeout")
	errShortBody     = errors.New("body shorter than announced")
	errClosed        = errors.New("stream closed")
)

// StatusError is an HTTP reply with an unexpected status.
type StatusError struct {
	URL    string // redacted
	Range  string // the request's Range header, "" for the whole file
	Code   int
	Status string // as sent, e.g. "404 Not Found"
	// RetryAfter is the server's Retry-After, 0 if absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	if e.Range == "" {
		return fmt.Sprintf("GET %s: %s", e.URL, e.Status)
	}
	return fmt.Sprintf("GET %s %s: %s", e.URL, e.Range, e.Status)
}

// Temporary reports whether the status is worth retrying: 5xx, 408, 429.
func (e *StatusError) Temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests
}

// Options tune a Stream. The zero value is ready to use.
type Options struct {
	// Client sends the requests. Nil builds one from TLS that speaks
	// HTTP/1.1 only, so that parallel ranges travel on parallel TCP
	// connections. A Client's own Timeout bounds the whole download, so it
	// should be zero: HeaderTimeout and IdleTimeout bound each request.
	Client *http.Client
	// TLS configures https for the built-in client (nil: system roots).
	// Set Client or TLS, not both.
	TLS *tls.Config
	// Parallel is the number of concurrent Range requests (default 4).
	Parallel int
	// ChunkSize is the length of each Range request (default 8 MiB). At
	// most Parallel+1 chunks are held in memory.
	ChunkSize int
	// Retries is how many times a request that failed without receiving
	// a byte is retried in a row before the download is abandoned
	// (default 5; negative: none). The count is per range chunk (or per
	// single stream), and an attempt that received bytes starts it anew,
	// so a server that cuts connections still serves the image as long as
	// every connection brings some of it.
	Retries int
	// HeaderTimeout bounds connecting, the TLS handshake and waiting for
	// the response headers of each request (default 30 s).
	HeaderTimeout time.Duration
	// IdleTimeout is how long a response body may deliver nothing before
	// the request is abandoned and resumed (default 30 s).
	IdleTimeout time.Duration
	// Backoff spaces retries (zero: backoff.Default()). A longer
	// Retry-After from the server is honoured up to Backoff.Cap.
	Backoff backoff.Policy
	// Logger receives retries and fallbacks (nil: discarded).
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Client != nil && o.TLS != nil {
		return o, errors.New("Options.Client and Options.TLS are exclusive: configure TLS on the client's transport")
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 8 << 20
	}
	switch {
	case o.Retries == 0:
		o.Retries = 5
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.Backoff.Base <= 0 {
		o.Backoff = backoff.Default()
	}
	o.Backoff.Cap = max(o.Backoff.Cap, o.Backoff.Base)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Stats count what a Stream did.
type Stats struct {
	// Fetched is the number of body bytes received; with parallel ranges
	// it runs ahead of what Read has returned.
	Fetched int64
	// Retries is the number of requests repeated after a failure; Resumes
	// counts those that continued a partly received body.
	Retries, Resumes int
	// Chunks is the number of range chunks completed.
	Chunks int
	// Ranged says parallel Range requests are in use (false: one stream,
	// or a file).
	Ranged bool
}

type counters struct {
	fetched, retries, resumes, chunks atomic.Int64
	ranged                            atomic.Bool
}

// source is one way of producing the bytes: parallel ranges, one stream, a
// file, or nothing.
type source interface {
	Read(p []byte) (int, error)
	close() error
}

var (
	_ io.ReadCloser = (*Stream)(nil)
	_ source        = (*ranged)(nil)
	_ source        = (*single)(nil)
	_ source        = (*fileSource)(nil)
	_ source        = empty{}
)

// Stream is an open image. Read delivers the file's bytes in order; Close
// may be called from another goroutine to abort a blocked Read.
type Stream struct {
	url    string // redacted, for errors
	size   int64
	ctx    context.Context
	cancel context.CancelCauseFunc
	stats  *counters
	f      *fetcher // nil for files

	mu        sync.Mutex // held by Read and Close
	src       source
	delivered int64
	err       error // sticky: io.EOF, a failure, errClosed
	closed    bool
}

// Open starts fetching rawURL (http, https or file). For http(s) it returns
// once the first response headers arrived, retrying as Options allow; ctx
// bounds the whole download, not just Open.
func Open(ctx context.Context, rawURL string, opts Options) (*Stream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("fetch %s: URL has no host", u.Redacted())
		}
		return openHTTP(ctx, u, o)
	case "file":
		return openFile(ctx, u)
	}
	return nil, fmt.Errorf("fetch %s: %w %q (want http, https or file)", u.Redacted(), ErrUnsupportedScheme, u.Scheme)
}

// Source adapts Open to the installer's image source (agent/image.Source).
func Source(opts Options) func(ctx context.Context, url string) (io.ReadCloser, int64, error) {
	return func(ctx context.Context, url string) (io.ReadCloser, int64, error) {
		s, err := Open(ctx, url, opts)
		if err != nil {
			return nil, -1, err
		}
		return s, s.Size(), nil
	}
}

// Size is the image's length in bytes, -1 when the server did not say.
func (s *Stream) Size() int64 { return s.size }

// Stats returns a snapshot of the counters; safe during Read.
func (s *Stream) Stats() Stats {
	return Stats{
		Fetched: s.stats.fetched.Load(),
		Retries: int(s.stats.retries.Load()),
		Resumes: int(s.stats.resumes.Load()),
		Chunks:  int(s.stats.chunks.Load()),
		Ranged:  s.stats.ranged.Load(),
	}
}

// Read implements io.Reader. After an error every Read returns it again.
func (s *Stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := s.src.Read(p)
		s.delivered += int64(n)
		if err == nil || err == io.EOF {
			s.err = err
			return n, err
		}
		if errors.Is(err, ErrRangeIgnored) && s.delivered == 0 && !s.closed {
			if err = s.fallBack(err); err == nil {
				continue
			}
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || err == errClosed {
			err = fmt.Errorf("fetch %s: %w", s.url, err)
		}
		s.err = err
		return n, err
	}
}

// fallBack replaces parallel ranges by one stream when the server ignored a
// Range request before any byte was delivered.
func (s *Stream) fallBack(cause error) error {
	if err := s.src.close(); err != nil {
		return err
	}
	s.stats.ranged.Store(false)
	s.f.log.Warn("fetch: server ignored Range; falling back to one stream", "url", s.url, "err", cause)
	one := &single{f: s.f, ctx: s.ctx}
	s.src = one
	return one.connect()
}

// Close stops every request, waits for the workers and releases buffers and
// connections. It is safe to call more than once.
func (s *Stream) Close() error {
	s.cancel(errClosed)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.err = fmt.Errorf("fetch %s: %w", s.url, errClosed)
	err := s.src.close()
	if s.f != nil {
		s.f.closeIdle()
	}
	return err
}

// empty is a zero-length file.
type empty struct{}

func (empty) Read([]byte) (int, error) { return 0, io.EOF }
func (empty) close() error             { return nil }
