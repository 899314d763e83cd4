package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// counters are the fleet's heartbeat outcomes.
type counters struct{ hbOK, hbErr atomic.Int64 }

// simAgent is one simulated machine: its own TCP+TLS connection from its
// own loopback address (the controller limits registrations per source
// address, as it would per machine), a Register with a real server's
// inventory, a Wait stream, and a Heartbeat every interval the server told.
// When its stream breaks it opens one on the next server address (the
// replicas), or on the same one again, with backoff.
type simAgent struct {
	i      int
	addrs  []string
	tlsCfg *tls.Config
	cnt    *counters

	mu   sync.Mutex
	at   int // index in addrs of the server it is attached to
	conn *grpc.ClientConn
	api  anvilv1.AgentServiceClient

	id, cred string
	every    time.Duration
	stream   anvilv1.AgentService_WaitClient
	ctx      context.Context
	cancel   context.CancelFunc
	got      chan time.Time // an Install arrived
	reopened chan time.Time // the stream is open again after a break
}

func newAgent(i int, addrs []string, tlsCfg *tls.Config, cnt *counters) *simAgent {
	ctx, cancel := context.WithCancel(context.Background())
	return &simAgent{i: i, addrs: addrs, at: i % len(addrs), tlsCfg: tlsCfg, cnt: cnt, ctx: ctx, cancel: cancel,
		got: make(chan time.Time, 1), reopened: make(chan time.Time, 1)}
}

// localAddr is agent i's source address: 127.1.0.0 onwards (all of
// 127/8 is loopback).
func localAddr(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, byte(1+i>>16), byte(i>>8), byte(i))}
}

// dial connects to addr and waits until the connection is READY.
func dial(ctx context.Context, addr string, local *net.TCPAddr, tlsCfg *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	d := &net.Dialer{}
	if local != nil {
		d.LocalAddr = local
	}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			conn.Close()
			return nil, fmt.Errorf("connect %s from %s: %w", addr, local, ctx.Err())
		}
	}
	return conn, nil
}

// connect opens the agent's connection to its server.
func (a *simAgent) connect() error {
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	conn, err := dial(ctx, a.addrs[a.at], localAddr(a.i), a.tlsCfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.conn, a.api = conn, anvilv1.NewAgentServiceClient(conn)
	a.mu.Unlock()
	return nil
}

func (a *simAgent) client() anvilv1.AgentServiceClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.api
}

// register times Register alone, then opens the Wait stream.
func (a *simAgent) register(boot string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	req := &anvilv1.RegisterRequest{Inventory: inventory(harness.UUID("agentload", a.i), a.i), AgentVersion: "agentload"}
	t := time.Now()
	resp, err := a.client().Register(ctx, req, grpc.PerRPCCredentials(pki.Bearer(boot)))
	d := time.Since(t)
	if err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	a.id, a.cred, a.every = resp.GetMachineId(), resp.GetCredential(), resp.GetHeartbeatInterval().AsDuration()
	a.stream, err = a.client().Wait(a.ctx, &anvilv1.WaitRequest{}, grpc.PerRPCCredentials(pki.Bearer(a.cred)))
	return d, err
}

// wait blocks until the server has accepted the Wait stream (headers), then
// reads instructions and sends heartbeats in the background.
func (a *simAgent) wait() error {
	if _, err := a.stream.Header(); err != nil {
		return fmt.Errorf("wait stream: %w", err)
	}
	go a.recv(a.stream)
	if a.every > 0 {
		go a.heartbeats()
	}
	return nil
}

func (a *simAgent) recv(stream anvilv1.AgentService_WaitClient) {
	for {
		in, err := stream.Recv()
		if err != nil {
			if stream = a.failover(); stream == nil {
				return
			}
			continue
		}
		if in.GetInstall() != nil {
			select {
			case a.got <- time.Now():
			default:
			}
		}
	}
}

// failover opens a Wait stream on the next server (the same one when
// there is only one), with backoff, until it has its headers; nil once the
// agent is closed.
func (a *simAgent) failover() anvilv1.AgentService_WaitClient {
	for attempt := 0; a.ctx.Err() == nil; attempt++ {
		a.mu.Lock()
		a.at = (a.at + 1) % len(a.addrs)
		addr := a.addrs[a.at]
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
		conn, err := dial(ctx, addr, localAddr(a.i), a.tlsCfg)
		cancel()
		if err == nil {
			api := anvilv1.NewAgentServiceClient(conn)
			stream, err := api.Wait(a.ctx, &anvilv1.WaitRequest{}, grpc.PerRPCCredentials(pki.Bearer(a.cred)))
			if err == nil {
				_, err = stream.Header()
			}
			if err == nil {
				a.mu.Lock()
				old := a.conn
				a.conn, a.api = conn, api
				a.mu.Unlock()
				old.Close()
				select {
				case a.reopened <- time.Now():
				default:
				}
				return stream
			}
			conn.Close()
		}
		select {
		case <-a.ctx.Done():
		case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second)):
		}
	}
	return nil
}

func (a *simAgent) heartbeats() {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
			_, err := a.client().Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, grpc.PerRPCCredentials(pki.Bearer(a.cred)))
			cancel()
			switch {
			case err == nil:
				a.cnt.hbOK.Add(1)
			case a.ctx.Err() == nil:
				a.cnt.hbErr.Add(1)
			}
		}
	}
}

// server is the index in addrs of the server the agent is attached to.
func (a *simAgent) server() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at
}

func (a *simAgent) close() {
	if a == nil {
		return
	}
	a.cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil {
		a.conn.Close()
	}
}
