package server

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/sizes"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// NewGRPCServer returns a grpc.Server with the interceptor chain (logging,
// panic recovery, authentication, request validation) and every service
// registered. opts come first (e.g. grpc.Creds).
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	log := callLog{s.log}
	recover := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error (recovered panic; see controller log)")
	})
	// The caller's options come first: their interceptors (metrics) run
	// before the built-in ones, so the calls those refuse are seen too.
	all := append(append([]grpc.ServerOption{}, opts...),
		grpc.ChainUnaryInterceptor(
			log.unary,
			recovery.UnaryServerInterceptor(recover),
			ratelimit.UnaryServerInterceptor(s.regLimit),
			auth.UnaryServerInterceptor(denyAll),
			validator.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			log.stream,
			recovery.StreamServerInterceptor(recover),
			auth.StreamServerInterceptor(denyAll),
			validator.StreamServerInterceptor(),
		),
	)
	// Bounds a client cannot lift: streams per connection (an agent needs
	// two or three), and the size of one request.
	all = append([]grpc.ServerOption{grpc.MaxConcurrentStreams(32), grpc.MaxRecvMsgSize(4 << 20)}, all...)
	g := grpc.NewServer(all...)
	s.RegisterServices(g)
	return g
}

// toStatus maps store and domain errors to gRPC statuses; errors that
// already carry a status pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &se) {
		if se == err {
			return err
		}
		// Keep the code; replace the inner "rpc error: code = … desc = …"
		// with its bare message so the context reads cleanly.
		st := se.GRPCStatus()
		return status.Error(st.Code(), strings.Replace(err.Error(), se.Error(), st.Message(), 1))
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, sizes.ErrOverlap):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, driver.ErrBadConn):
		// The database connection was lost (the server restarted, or
		// ended a session it found idle in a transaction): nothing of
		// the transaction was kept; try again.
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// stateName renders a state for messages: MACHINE_STATE_READY → "ready".
func stateName(st anvilv1.MachineState) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(st.String(), "MACHINE_STATE_"), "_", " "))
}
