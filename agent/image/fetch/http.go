package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// fetcher is what every request of one Stream shares.
type fetcher struct {
	o      Options
	client *http.Client
	own    *http.Transport // built here: its idle connections die with the Stream
	url    string          // redacted, for errors and logs
	target string          // where requests go: the first reply's URL, after redirects
	log    *slog.Logger
	stats  *counters

	// Learnt from the first reply, read-only afterwards.
	size          int64
	etag, lastMod string
	ifRange       string // the validator sent in If-Range, "" when none is strong
}

func newFetcher(u *url.URL, o Options) *fetcher {
	f := &fetcher{
		o:      o,
		client: o.Client,
		url:    u.Redacted(),
		target: u.String(),
		log:    o.Logger,
		stats:  new(counters),
		size:   -1,
	}
	if f.client == nil {
		f.own = newTransport(o)
		f.client = &http.Client{Transport: f.own}
	}
	return f
}

// newTransport speaks HTTP/1.1 only: each parallel range gets its own TCP
// connection (HTTP/2 would multiplex them onto one) and its own congestion
// window.
func newTransport(o Options) *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	var tc *tls.Config
	if o.TLS != nil {
		tc = o.TLS.Clone()
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.HeaderTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   o.HeaderTimeout,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   o.Parallel + 1,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		Protocols:             protocols,
	}
}

func (f *fetcher) closeIdle() {
	if f.own != nil {
		f.own.CloseIdleConnections()
	}
}

// learn records the validator of the first reply. A weak ETag is compared
// but never sent in If-Range (RFC 9110 §13.1.5); a Last-Modified date is
// sent only when it is a strong validator, at least a second before the
// reply's Date (§8.8.2.2).
func (f *fetcher) learn(resp *http.Response) {
	f.target = resp.Request.URL.String()
	f.etag = resp.Header.Get("ETag")
	f.lastMod = resp.Header.Get("Last-Modified")
	switch {
	case f.etag != "" && !strings.HasPrefix(f.etag, "W/"):
		f.ifRange = f.etag
	case f.etag == "" && f.lastMod != "":
		lm, err1 := http.ParseTime(f.lastMod)
		date, err2 := http.ParseTime(resp.Header.Get("Date"))
		if err1 == nil && err2 == nil && !lm.After(date.Add(-time.Second)) {
			f.ifRange = f.lastMod
		}
	}
}

// changed reports a reply whose validator differs from the first reply's.
func (f *fetcher) changed(h http.Header) bool {
	if et := h.Get("ETag"); f.etag != "" && et != "" && et != f.etag {
		return true
	}
	lm := h.Get("Last-Modified")
	return f.lastMod != "" && lm != "" && lm != f.lastMod
}

// exchange is one request whose response headers arrived.
type exchange struct {
	resp   *http.Response
	parent context.Context // the Stream's (or the ranged workers') context
	ctx    context.Context // the request's, cancelled by the timers
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
}

// send issues one GET, with "Range: bytes=first-last" when first >= 0 (last
// < 0: to the end), and returns once the response headers arrived.
func (f *fetcher) send(ctx context.Context, first, last int64) (*exchange, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, f.target, nil)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %w", f.url, err)
	}
	// Explicit, so that no client decodes a gzip body: ranges count the
	// stored bytes.
	req.Header.Set("Accept-Encoding", "identity")
	if first >= 0 {
		req.Header.Set("Range", rangeSpec(first, last))
		if f.ifRange != "" {
			req.Header.Set("If-Range", f.ifRange)
		}
	}
	t := time.AfterFunc(f.o.HeaderTimeout, func() { cancel(errHeaderTimeout) })
	resp, err := f.client.Do(req)
	t.Stop()
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("GET %s %s: %w", f.url, rangeSpec(first, last), requestErr(ctx, rctx, err))
	}
	x := &exchange{resp: resp, parent: ctx, ctx: rctx, cancel: cancel, idle: f.o.IdleTimeout}
	x.timer = time.AfterFunc(x.idle, func() { cancel(errIdle) })
	return x, nil
}

// read reads the body, restarting the idle timer on progress.
func (x *exchange) read(p []byte) (int, error) {
	n, err := x.resp.Body.Read(p)
	if n > 0 {
		x.timer.Reset(x.idle)
	}
	if err != nil && err != io.EOF {
		err = requestErr(x.parent, x.ctx, err)
	}
	return n, err
}

func (x *exchange) close() {
	x.timer.Stop()
	x.resp.Body.Close()
	x.cancel(nil)
}

// requestErr names why a request failed: the caller's cancellation, one of
// our timers, or the transport's own error.
func requestErr(parent, req context.Context, err error) error {
	if parent.Err() != nil {
		return context.Cause(parent)
	}
	if c := context.Cause(req); c == errIdle || c == errHeaderTimeout {
		return c
	}
	return err
}

func rangeSpec(first, last int64) string {
	switch {
	case first < 0:
		return "(whole file)"
	case last < 0:
		return fmt.Sprintf("bytes=%d-", first)
	}
	return fmt.Sprintf("bytes=%d-%d", first, last)
}

func (f *fetcher) statusError(resp *http.Response) error {
	return &StatusError{
		URL:        f.url,
		Range:      resp.Request.Header.Get("Range"),
		Code:       resp.StatusCode,
		Status:     resp.Status,
		RetryAfter: retryAfter(resp.Header, time.Now()),
	}
}

// probe sends the first request, for the first chunk, retrying as Options
// allow. It returns a 206 (ranges work), a 200 (the server ignores ranges)
// or a 416 for an empty file.
func (f *fetcher) probe(ctx context.Context) (*exchange, error) {
	last := int64(f.o.ChunkSize) - 1
	var budget retryBudget
	for {
		x, err := f.send(ctx, 0, last)
		if err == nil {
			if err = f.checkProbe(x.resp, last); err == nil {
				return x, nil
			}
			x.close()
		}
		if err = f.retry(ctx, &budget, err, false); err != nil {
			return nil, err
		}
	}
}

func (f *fetcher) checkProbe(resp *http.Response, last int64) error {
	switch resp.StatusCode {
	case http.StatusOK:
		return f.check(resp, -1, -1)
	case http.StatusPartialContent:
		_, _, complete, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fmt.Errorf("GET %s %s: %w: %w", f.url, rangeSpec(0, last), ErrBadResponse, err)
		}
		if complete < 0 {
			// Length unknown: Open drops this reply and streams.
			return f.check(resp, 0, -1)
		}
		return f.check(resp, 0, min(last, complete-1))
	case http.StatusRequestedRangeNotSatisfiable:
		if _, _, complete, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && complete == 0 {
			return nil
		}
	}
	return f.statusError(resp)
}

// check verifies a reply to send(first, last): first < 0 wants a 200 with
// the whole file, first >= 0 a 206 for exactly those bytes (last < 0: to
// the end). In both cases the validator and the size must not have changed.
func (f *fetcher) check(resp *http.Response, first, last int64) error {
	h := resp.Header
	op := "GET " + f.url + " " + rangeSpec(first, last)
	switch code := resp.StatusCode; {
	case code == http.StatusOK && first < 0, code == http.StatusPartialContent && first >= 0:
	case code == http.StatusOK:
		if f.changed(h) {
			return fmt.Errorf("%s: %w: validator %s %s is now %s %s", op, ErrChanged, f.etag, f.lastMod, h.Get("ETag"), h.Get("Last-Modified"))
		}
		return fmt.Errorf("%s: %w: status %s", op, ErrRangeIgnored, resp.Status)
	case code == http.StatusRequestedRangeNotSatisfiable && first >= 0:
		return fmt.Errorf("%s: %w: range no longer satisfiable (%s)", op, ErrChanged, h.Get("Content-Range"))
	case code == http.StatusPartialContent:
		return fmt.Errorf("%s: %w: 206 to a request without Range", op, ErrBadResponse)
	default:
		return f.statusError(resp)
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("%s: %w: Content-Encoding %q", op, ErrBadResponse, ce)
	}
	if f.changed(h) {
		return fmt.Errorf("%s: %w: validator %s %s is now %s %s", op, ErrChanged, f.etag, f.lastMod, h.Get("ETag"), h.Get("Last-Modified"))
	}
	if first < 0 {
		if f.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != f.size {
			return fmt.Errorf("%s: %w: size %d, was %d", op, ErrChanged, resp.ContentLength, f.size)
		}
		return nil
	}
	cr := h.Get("Content-Range")
	a, b, complete, err := parseContentRange(cr)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", op, ErrBadResponse, err)
	}
	if f.size >= 0 && complete >= 0 && complete != f.size {
		return fmt.Errorf("%s: %w: size %d, was %d", op, ErrChanged, complete, f.size)
	}
	if last < 0 && f.size >= 0 {
		last = f.size - 1
	}
	if a != first || (last >= 0 && b != last) {
		return fmt.Errorf("%s: %w: Content-Range %q", op, ErrBadResponse, cr)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b-a+1 {
		return fmt.Errorf("%s: %w: Content-Length %d for Content-Range %q", op, ErrBadResponse, resp.ContentLength, cr)
	}
	return nil
}

// retryBudget counts the failed attempts in a row of one download — the
// first request, a range chunk, a single stream — that received nothing.
// An attempt that received a byte neither counts nor lets the earlier ones
// count: a server that cuts every connection after a while still delivers
// the image as long as each connection moves it forward, while one that
// answers nothing (or only errors) fails after Options.Retries retries.
type retryBudget struct {
	fails    int  // failed attempts in a row that received nothing
	progress bool // the current attempt received bytes
}

// received records that the current attempt received n bytes.
func (b *retryBudget) received(n int) {
	if n > 0 {
		b.progress = true
	}
}

// failed ends the current attempt as a failure.
func (b *retryBudget) failed() {
	if b.progress {
		b.fails = 0
	} else {
		b.fails++
	}
	b.progress = false
}

// retry decides after a failed attempt: it returns nil after waiting out
// the backoff when the caller should try again, else the error to give up
// with. It ends b's current attempt; the failures in a row without data
// decide whether to give up and pick the backoff delay. resume says the
// next request continues a partly received body.
func (f *fetcher) retry(ctx context.Context, b *retryBudget, err error, resume bool) error {
	b.failed()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if !retryable(err) {
		return err
	}
	if b.fails > f.o.Retries {
		return fmt.Errorf("%w (gave up after %d attempts in a row that received no data)", err, b.fails)
	}
	attempt := max(b.fails-1, 0)
	d := f.o.Backoff.Delay(attempt)
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > d {
		d = min(se.RetryAfter, f.o.Backoff.Cap)
	}
	f.stats.retries.Add(1)
	if resume {
		f.stats.resumes.Add(1)
	}
	f.log.Warn("fetch: retrying", "url", f.url, "attempt", attempt+1, "delay", d, "resume", resume, "err", err)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// retryable separates transient failures (the network, timeouts, short
// bodies, 5xx/408/429) from answers that a retry would only repeat.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	for _, permanent := range []error{ErrChanged, ErrRangeIgnored, ErrBadResponse, errClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return !errors.As(err, &verify) && !errors.As(err, &unknown) && !errors.As(err, &hostname) && !errors.As(err, &invalid)
}

// retryAfter parses Retry-After, seconds or an HTTP date (RFC 9110 §10.2.3).
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 31); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// openHTTP probes the server and picks the way to stream.
func openHTTP(ctx context.Context, u *url.URL, o Options) (*Stream, error) {
	f := newFetcher(u, o)
	ctx, cancel := context.WithCancelCause(ctx)
	s := &Stream{url: f.url, ctx: ctx, cancel: cancel, stats: f.stats, f: f}
	fail := func(err error) (*Stream, error) {
		cancel(err)
		f.closeIdle()
		return nil, err
	}
	x, err := f.probe(ctx)
	if err != nil {
		return fail(err)
	}
	f.learn(x.resp)
	switch x.resp.StatusCode {
	case http.StatusRequestedRangeNotSatisfiable:
		x.close()
		f.size = 0
		s.src = empty{}
	case http.StatusOK:
		f.size = x.resp.ContentLength
		s.src = &single{f: f, ctx: ctx, x: x, resumable: acceptsRanges(x.resp.Header)}
	default: // 206
		_, _, complete, _ := parseContentRange(x.resp.Header.Get("Content-Range"))
		if complete < 0 {
			// Ranges work but the length is unknown: one stream,
			// resumable.
			x.close()
			one := &single{f: f, ctx: ctx, resumable: true}
			if err := one.connect(); err != nil {
				return fail(err)
			}
			f.size = one.x.resp.ContentLength
			s.src = one
			break
		}
		f.size = complete
		f.stats.ranged.Store(true)
		s.src = newRanged(ctx, f, x)
	}
	s.size = f.size
	f.log.Debug("fetch: open", "url", f.url, "size", f.size, "ranged", f.stats.ranged.Load(), "etag", f.etag, "last_modified", f.lastMod)
	return s, nil
}

func acceptsRanges(h http.Header) bool {
	for _, v := range h.Values("Accept-Ranges") {
		for unit := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(unit), "bytes") {
				return true
			}
		}
	}
	return false
}
