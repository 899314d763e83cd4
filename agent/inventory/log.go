package inventory

import (
	"context"
	"log/slog"
)

// ghwLogHandler passes ghw's messages on at debug level: ghw warns about
// every gap it meets (no udev data, no DMI, no ethtool), and this package
// fills or reports those gaps itself.
type ghwLogHandler struct{ h slog.Handler }

var _ slog.Handler = ghwLogHandler{}

func (g ghwLogHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return g.h.Enabled(ctx, slog.LevelDebug)
}

func (g ghwLogHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return g.h.Handle(ctx, r)
}

func (g ghwLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return ghwLogHandler{g.h.WithAttrs(attrs)}
}

func (g ghwLogHandler) WithGroup(name string) slog.Handler {
	return ghwLogHandler{g.h.WithGroup(name)}
}
