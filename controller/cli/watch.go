package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// watchEvents follows WatchEvents for machineID (every machine when empty),
// passing each event with a sequence number above after to emit, until ctx
// is cancelled. A stream that breaks or ends is reopened after a growing
// pause, resuming after the last event emitted; events the server replays
// again are dropped, so nothing is printed twice or skipped. Errors that
// retrying cannot fix (NotFound, Unauthenticated, ...) end the watch.
func (a *app) watchEvents(ctx context.Context, machineID string, after int64, emit func(*anvilv1.Event) error) error {
	pause := a.backoffMin
	for {
		received, err := a.followEvents(ctx, machineID, &after, emit)
		if ctx.Err() != nil {
			return nil
		}
		var fatal emitError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if !retryable(err) {
			return err
		}
		if received {
			pause = a.backoffMin
		}
		fmt.Fprintf(a.errOut, "anvilctl: event stream interrupted (%s); reconnecting in %s\n", describeError(err), pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		pause = min(2*pause, a.backoffMax)
	}
}

// errStreamEnded reports that the server closed the event stream.
var errStreamEnded = errors.New("the controller ended the stream")

// emitError wraps a failure to print, which ends a watch.
type emitError struct{ err error }

func (e emitError) Error() string { return e.err.Error() }

// followEvents opens one WatchEvents stream after *after and emits its new
// events, advancing *after, until the stream fails. received reports whether
// any event arrived.
func (a *app) followEvents(ctx context.Context, machineID string, after *int64, emit func(*anvilv1.Event) error) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.machines.WatchEvents(ctx, &anvilv1.WatchEventsRequest{MachineId: machineID, AfterSeq: *after})
	if err != nil {
		return false, err
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return received, errStreamEnded
		}
		if err != nil {
			return received, err
		}
		received = true
		if ev.GetSeq() <= *after {
			continue
		}
		if err := emit(ev); err != nil {
			return received, emitError{err}
		}
		*after = ev.GetSeq()
	}
}

// retryable reports whether reopening the stream may help.
func retryable(err error) bool {
	if errors.Is(err, errStreamEnded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Unknown, codes.Internal, codes.Aborted, codes.ResourceExhausted,
		codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}
