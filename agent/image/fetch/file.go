package fetch

import (
	"context"
	"fmt"
	"net/url"
	"os"
)

// fileSource reads a local file, for local images and tests.
type fileSource struct {
	ctx   context.Context
	file  *os.File
	stats *counters
}

// openFile opens file:///path (or file://localhost/path).
func openFile(ctx context.Context, u *url.URL) (*Stream, error) {
	if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
		return nil, fmt.Errorf("fetch %s: want file:///absolute/path", u.Redacted())
	}
	file, err := os.Open(u.Path)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	if st.IsDir() {
		file.Close()
		return nil, fmt.Errorf("fetch %s: is a directory", u.Redacted())
	}
	size := int64(-1)
	if st.Mode().IsRegular() {
		size = st.Size()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stats := new(counters)
	return &Stream{
		url:    u.Redacted(),
		size:   size,
		ctx:    ctx,
		cancel: cancel,
		stats:  stats,
		src:    &fileSource{ctx: ctx, file: file, stats: stats},
	}, nil
}

func (s *fileSource) Read(p []byte) (int, error) {
	if s.ctx.Err() != nil {
		return 0, context.Cause(s.ctx)
	}
	n, err := s.file.Read(p)
	s.stats.fetched.Add(int64(n))
	return n, err
}

func (s *fileSource) close() error { return s.file.Close() }
