package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Server is the UDP loop: it reads requests from its sockets, answers
// through Reply and sends the answer where RFC 2131 §4.1 says: to a relay
// agent's giaddr on port 67, to a configured client's ciaddr, else by
// broadcast on port 68. Requests from a specific address and port (tests,
// relays on loopback) are answered there.
type Server struct {
	cfg    Config
	leases LeaseBook
	log    *slog.Logger
	now    func() time.Time
	conns  []conn

	wg sync.WaitGroup
}

type conn struct {
	pc        net.PacketConn
	proxyPort bool
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithClock sets the time source (tests).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLeases makes full mode lease from book instead of a book in memory:
// the store's book (sqlstore.Store.LeaseBook), which every controller on
// the same database shares. Its pool must be the config's. Proxy mode
// ignores it.
func WithLeases(book LeaseBook) Option { return func(s *Server) { s.leases = book } }

// WithConn serves on pc; proxyPort marks it as the PXE port 4011.
func WithConn(pc net.PacketConn, proxyPort bool) Option {
	return func(s *Server) { s.conns = append(s.conns, conn{pc, proxyPort}) }
}

// Listen opens the DHCP sockets on an interface: port 67, and in proxy
// mode also 4011, bound to the device (SO_BINDTODEVICE) so broadcasts
// reach only the provisioning network.
func Listen(iface string, mode Mode) ([]Option, error) {
	ports := []int{dhcpv4.ServerPort}
	if mode == Proxy {
		ports = append(ports, 4011)
	}
	var opts []Option
	var opened []net.PacketConn
	for _, p := range ports {
		c, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{IP: net.IPv4zero, Port: p})
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return nil, fmt.Errorf("DHCP socket on %s port %d: %w", iface, p, err)
		}
		opened = append(opened, c)
		opts = append(opts, WithConn(c, p == 4011))
	}
	return opts, nil
}

// New checks cfg and builds a server on the given sockets.
func New(cfg Config, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("DHCP: %w", err)
	}
	s := &Server{cfg: cfg, log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if cfg.Mode == Full {
		if s.leases == nil {
			s.leases = NewLeases(cfg.PoolStart, cfg.PoolEnd)
		}
		if start, end := s.leases.Pool(); start != cfg.PoolStart || end != cfg.PoolEnd {
			return nil, fmt.Errorf("DHCP: the lease book's pool %v-%v is not the configured pool %v-%v", start, end, cfg.PoolStart, cfg.PoolEnd)
		}
	}
	if len(s.conns) == 0 {
		return nil, errors.New("DHCP: no socket to serve on")
	}
	return s, nil
}

// Serve answers requests until ctx ends, then closes the sockets.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.conns))
	for _, c := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			errc <- s.loop(ctx, c)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, c := range s.conns {
		c.pc.Close()
	}
	s.wg.Wait()
	return err
}

// replyTimeout bounds the work on one request (the lease book's database
// round trips): a client retransmits after about 4 s (RFC 2131 §4.1), so
// an answer later than that is wasted.
const replyTimeout = 2 * time.Second

func (s *Server) loop(ctx context.Context, c conn) error {
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("DHCP read: %w", err)
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			s.log.Warn("malformed DHCP packet", "from", peer.String(), "bytes", n, "err", err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, replyTimeout)
		resp, err := Reply(rctx, s.cfg, s.leases, req, s.now(), c.proxyPort)
		cancel()
		if errors.Is(err, ErrIgnore) {
			s.log.Debug("DHCP request not answered", "mac", req.ClientHWAddr.String(), "why", err)
			continue
		}
		if err != nil {
			s.log.Error("DHCP request failed, not answered", "mac", req.ClientHWAddr.String(), "type", req.MessageType().String(), "err", err)
			continue
		}
		to := destination(req, peer)
		if _, err := c.pc.WriteTo(resp.ToBytes(), to); err != nil {
			s.log.Error("DHCP reply not sent", "mac", req.ClientHWAddr.String(), "to", to.String(), "err", err)
			continue
		}
		s.log.Info("DHCP", "mac", req.ClientHWAddr.String(), "request", req.MessageType().String(), "reply", resp.MessageType().String(),
			"yiaddr", resp.YourIPAddr.String(), "bootfile", resp.BootFileNameOption(), "pxe_port", c.proxyPort)
	}
}

// destination is where a reply to req from peer goes.
func destination(req *dhcpv4.DHCPv4, peer net.Addr) net.Addr {
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	}
	if u, ok := peer.(*net.UDPAddr); ok && !u.IP.IsUnspecified() {
		return u // a client with an address (renewal, port 4011, tests)
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}
