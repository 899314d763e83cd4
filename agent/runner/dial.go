package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/ctrladdr"
)

// How the runner reaches the controller replicas: one ClientConn over every
// address, with gRPC's pick_first balancer. pick_first keeps the agent on
// one replica while it answers (its Wait stream, reports and heartbeats go
// to the same one) and, when that replica's connection breaks, connects to
// the next address that answers (Happy Eyeballs: an address that does not
// answer delays the next by 250 ms, not a connect timeout). The list is
// shuffled once per runner, so a rack of agents given the same list spreads
// over the replicas.

// resolverScheme names the resolver of a fixed address list; it is
// registered on the runner's own ClientConn only (grpc.WithResolvers).
const resolverScheme = "anvil-controllers"

// target is the gRPC target for the controller addresses, and the resolver
// it needs: a fixed list is handed to a manual resolver, each address
// carrying its own host as the TLS server name; one DNS name goes to gRPC's
// dns resolver (every record, resolved again when none answers), verified
// for that name.
func target(l ctrladdr.List) (string, resolver.Builder) {
	if l.Name() {
		return "dns:///" + l[0], nil
	}
	r := manual.NewBuilderWithScheme(resolverScheme)
	r.InitialState(resolver.State{Endpoints: endpoints(l)})
	return resolverScheme + ":///" + l[0], r
}

// endpoints lists the addresses in order, one endpoint each, each verified
// against its own host.
func endpoints(l ctrladdr.List) []resolver.Endpoint {
	eps := make([]resolver.Endpoint, len(l))
	for i, a := range l {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a, ServerName: l.Host(i)}}}
	}
	return eps
}

// serviceConfig selects pick_first, shuffled or in the given order.
func serviceConfig(shuffle bool) string {
	return fmt.Sprintf(`{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":%t}}]}`, shuffle)
}

// connectParams makes gRPC's own reconnection follow the runner's backoff
// (gRPC's default waits up to 120 s between attempts).
func connectParams(p backoff.Policy) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: p.Base, Multiplier: 1.6, Jitter: 0.2, MaxDelay: p.Cap},
		MinConnectTimeout: 20 * time.Second,
	}
}

// perServer is transport credentials that build the TLS configuration for
// each handshake from the name the address is verified for, so a pin that
// checks the certificate against the dialled host (pki.ClientTLS with a
// fingerprint and no CA, where crypto/tls keeps no server name for an IP
// address) checks each replica against its own host.
type perServer struct {
	tlsFor func(serverName string) (*tls.Config, error)
	mu     sync.Mutex
	creds  map[string]credentials.TransportCredentials
}

var _ credentials.TransportCredentials = (*perServer)(nil)

func newPerServer(tlsFor func(string) (*tls.Config, error)) *perServer {
	return &perServer{tlsFor: tlsFor, creds: make(map[string]credentials.TransportCredentials)}
}

// forName returns the credentials for one server name, built once.
func (p *perServer) forName(name string) (credentials.TransportCredentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.creds[name]; ok {
		return c, nil
	}
	cfg, err := p.tlsFor(name)
	if err != nil {
		return nil, err
	}
	c := credentials.NewTLS(cfg)
	p.creds[name] = c
	return c, nil
}

// ClientHandshake implements credentials.TransportCredentials; authority
// is the address's server name (host or host:port).
func (p *perServer) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	name, _, err := net.SplitHostPort(authority)
	if err != nil {
		name = authority
	}
	c, err := p.forName(name)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("TLS configuration for controller %s: %w", authority, err)
	}
	return c.ClientHandshake(ctx, authority, conn)
}

// ServerHandshake implements credentials.TransportCredentials; these are
// client credentials only.
func (p *perServer) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn.Close()
	return nil, nil, errors.New("agent credentials cannot serve")
}

// Info implements credentials.TransportCredentials. It names no server: the
// name comes with each address.
func (p *perServer) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

// Clone implements credentials.TransportCredentials.
func (p *perServer) Clone() credentials.TransportCredentials { return newPerServer(p.tlsFor) }

// OverrideServerName implements credentials.TransportCredentials; the
// server name comes from each address and cannot be overridden.
func (p *perServer) OverrideServerName(string) error {
	return errors.New("the controller's server name comes from each address")
}
