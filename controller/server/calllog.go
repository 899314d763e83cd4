package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callLog logs every finished call at the level its status code calls
// for: OK and Canceled at debug, server faults (Internal, Unknown,
// DataLoss, Unavailable) at error, the rest at info. A call that failed
// with Unavailable after its client went away (its context cancelled: a
// rebooting machine, a closed connection; not a deadline, which a slow
// store can cause) is the client's doing, logged at debug too: a fleet
// rebooting at once is not an error storm.
// A call is looked at
// only once it has finished, and one whose level is off costs nothing: a
// fleet's heartbeats and its 10,000 open Wait streams carry no log fields.
type callLog struct{ log *slog.Logger }

func callLevel(c codes.Code) slog.Level {
	switch c {
	case codes.OK, codes.Canceled:
		return slog.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (l callLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	l.finished(ctx, info.FullMethod, "unary", start, err)
	return resp, err
}

func (l callLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	kind := "server_stream"
	switch {
	case info.IsClientStream && info.IsServerStream:
		kind = "bidi_stream"
	case info.IsClientStream:
		kind = "client_stream"
	}
	l.finished(ss.Context(), info.FullMethod, kind, start, err)
	return err
}

func (l callLog) finished(ctx context.Context, fullMethod, kind string, start time.Time, err error) {
	code := status.Code(err)
	lvl := callLevel(code)
	if code == codes.Unavailable && errors.Is(ctx.Err(), context.Canceled) {
		lvl = slog.LevelDebug
	}
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	attrs := []slog.Attr{
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", kind),
		slog.String("grpc.code", code.String()),
		slog.Float64("grpc.time_ms", float64(time.Since(start).Microseconds())/1000),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", err.Error()))
	}
	l.log.LogAttrs(ctx, lvl, "finished call", attrs...)
}
