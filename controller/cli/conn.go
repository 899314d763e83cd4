package cli

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/controller/pki"
)

// dial returns a lazily connecting client for cfg: TLS trusting the
// configured CA, the bearer token on every call, and cfg.timeout on every
// unary call that has no deadline yet.
func dial(cfg connConfig) (*grpc.ClientConn, error) {
	host, _, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		// A bare host name or IP address: use the default port.
		host = strings.TrimSuffix(strings.TrimPrefix(cfg.addr, "["), "]")
		if host == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("controller address %q: want host[:port]", cfg.addr)
		}
		cfg.addr = net.JoinHostPort(host, DefaultPort)
	}
	tlsCfg, err := pki.ClientTLS(cfg.caPEM, cfg.fingerprint, pki.WithServerName(host))
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(cfg.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(pki.Bearer(cfg.token)),
		grpc.WithUnaryInterceptor(timeoutInterceptor(cfg.timeout)),
	)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", cfg.addr, err)
	}
	return conn, nil
}

func timeoutInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
