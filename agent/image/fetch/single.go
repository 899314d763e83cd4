package fetch

import (
	"context"
	"fmt"
	"io"
)

// single streams one GET straight into the reader's buffer. After a
// transient failure it resumes with "Range: bytes=<delivered>-" when the
// server supports ranges; otherwise only a failure before the first byte can
// be retried.
type single struct {
	f         *fetcher
	ctx       context.Context
	x         *exchange // nil between requests
	off       int64     // bytes received, which is bytes delivered
	resumable bool
	budget    retryBudget
	pending   error // the failure to back off from before the next request
	done      bool
}

func (s *single) Read(p []byte) (int, error) {
	for {
		if s.done {
			return 0, io.EOF
		}
		if s.x == nil {
			if err := s.connect(); err != nil {
				return 0, err
			}
		}
		if s.f.size >= 0 {
			// Never more than the announced size, whatever the body says.
			p = p[:min(int64(len(p)), s.f.size-s.off)]
			if len(p) == 0 {
				s.finish()
				return 0, io.EOF
			}
		}
		n, err := s.x.read(p)
		s.off += int64(n)
		s.f.stats.fetched.Add(int64(n))
		s.budget.received(n)
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (s.f.size < 0 || s.off == s.f.size):
			s.finish()
			return n, io.EOF
		case err == io.EOF:
			err = fmt.Errorf("GET %s: %w: got %d of %d bytes", s.f.url, errShortBody, s.off, s.f.size)
		default:
			err = fmt.Errorf("GET %s: at byte %d: %w", s.f.url, s.off, err)
		}
		s.x.close()
		s.x = nil
		if s.ctx.Err() != nil {
			return n, context.Cause(s.ctx)
		}
		if s.off > 0 && !s.resumable {
			return n, fmt.Errorf("%w; the server does not support Range requests, so the download cannot resume", err)
		}
		s.pending = err
		if n > 0 {
			return n, nil
		}
	}
}

func (s *single) finish() {
	s.done = true
	if s.x != nil {
		s.x.close()
		s.x = nil
	}
}

// connect sends the next request: the whole file from the start, or the
// rest of it from s.off, after backing off from a pending failure.
func (s *single) connect() error {
	for {
		if s.pending != nil {
			if err := s.f.retry(s.ctx, &s.budget, s.pending, s.off > 0); err != nil {
				return err
			}
			s.pending = nil
		}
		first := int64(-1)
		if s.off > 0 {
			first = s.off
		}
		x, err := s.f.send(s.ctx, first, -1)
		if err == nil {
			if err = s.f.check(x.resp, first, -1); err == nil {
				s.x = x
				return nil
			}
			x.close()
		}
		s.pending = err
	}
}

func (s *single) close() error {
	if s.x != nil {
		s.x.close()
		s.x = nil
	}
	return nil
}
