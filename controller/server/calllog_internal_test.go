package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Finished calls are logged at the level their code calls for, with the
// method, code and error; a call whose level is off is neither logged nor
// paid for.
func TestCallLog(t *testing.T) {
	var buf bytes.Buffer
	l := callLog{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	info := &grpc.UnaryServerInfo{FullMethod: "/anvil.v1.AgentService/Register"}
	call := func(err error) {
		t.Helper()
		buf.Reset()
		if _, got := l.unary(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, err }); got != err {
			t.Fatalf("the interceptor returned %v, want the handler's %v", got, err)
		}
	}
	for _, c := range []struct {
		err   error
		level string // "" when nothing is logged at info
	}{
		{nil, ""},
		{status.Error(codes.Canceled, "gone"), ""},
		{status.Error(codes.NotFound, "no such machine"), "INFO"},
		{status.Error(codes.Internal, "broken"), "ERROR"},
		{context.DeadlineExceeded, "ERROR"}, // not a status: Unknown
	} {
		call(c.err)
		if c.level == "" {
			if buf.Len() != 0 {
				t.Errorf("%v logged at info: %s", c.err, buf.String())
			}
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("%v: log line %q: %v", c.err, buf.String(), err)
		}
		want := map[string]any{"level": c.level, "msg": "finished call", "grpc.service": "anvil.v1.AgentService", "grpc.method": "Register",
			"grpc.method_type": "unary", "grpc.code": status.Code(c.err).String(), "grpc.error": c.err.Error()}
		for k, v := range want {
			if rec[k] != v {
				t.Errorf("%v: %s = %v, want %v (line %s)", c.err, k, rec[k], v, buf.String())
			}
		}
	}
	// A client that went away: its stream's sends fail with Unavailable,
	// which is not the server's fault.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	buf.Reset()
	closing := status.Error(codes.Unavailable, "transport is closing")
	_, _ = l.unary(gone, nil, info, func(context.Context, any) (any, error) { return nil, closing })
	if buf.Len() != 0 {
		t.Errorf("a call whose client went away logged at info: %s", buf.String())
	}
	// A deadline that passed while the store was slow or lost is not the
	// client going away: still an error.
	late, cancelLate := context.WithTimeout(context.Background(), 0)
	defer cancelLate()
	for name, ctx := range map[string]context.Context{"client still there": context.Background(), "deadline passed": late} {
		buf.Reset()
		_, _ = l.unary(ctx, nil, info, func(context.Context, any) (any, error) { return nil, closing })
		if !bytes.Contains(buf.Bytes(), []byte(`"level":"ERROR"`)) {
			t.Errorf("Unavailable, %s: logged %q, want an error", name, buf.String())
		}
	}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	if n := testing.AllocsPerRun(100, func() { _, _ = l.unary(context.Background(), nil, info, ok) }); n != 0 {
		t.Errorf("an OK call with debug logging off allocates %.0f times, want none", n)
	}
	debug := callLog{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	buf.Reset()
	sinfo := &grpc.StreamServerInfo{FullMethod: "/anvil.v1.AgentService/Wait", IsServerStream: true}
	if err := debug.stream(nil, fakeStream{}, sinfo, func(any, grpc.ServerStream) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"grpc.method_type":"server_stream"`)) || !bytes.Contains(buf.Bytes(), []byte(`"level":"DEBUG"`)) {
		t.Errorf("a finished stream at debug level logged %s", buf.String())
	}
}

type fakeStream struct{ grpc.ServerStream }

func (fakeStream) Context() context.Context { return context.Background() }
