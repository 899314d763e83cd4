package firewall

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/firewall/model"
)

// ErrBlocked is what an attempt returns when no answer came before its
// timeout: the firewall dropped the packet (or its answer).
var ErrBlocked = errors.New("no answer: blocked")

func sockaddr(a netip.Addr, port uint16) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// boundSocket creates a non-blocking socket in ns bound to a:port.
func boundSocket(ns *NS, a netip.Addr, port uint16, typ, proto int) (int, error) {
	fd, err := ns.Socket(family(a), typ|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return -1, err
	}
	if typ != unix.SOCK_RAW {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(a, port)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s in netns %s: %w", netip.AddrPortFrom(a, port), ns.Name, err)
	}
	return fd, nil
}

// Attempt makes one new connection attempt and reports nil when it got
// through, ErrBlocked when no answer came within timeout of sending the
// first packet, or another error (refused, unreachable, a local failure)
// that no firewall drop explains.
func (t *Topology) Attempt(ctx context.Context, p Probe, timeout time.Duration) error {
	_, err := t.AttemptFrom(ctx, p, timeout)
	return err
}

// AttemptFrom is Attempt, and also returns the source port it used (for
// Arrived).
func (t *Topology) AttemptFrom(ctx context.Context, p Probe, timeout time.Duration) (uint16, error) {
	ns, err := t.nsOf(p.Src)
	if err != nil {
		return 0, err
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return 0, fmt.Errorf("probe %s: mixed address families", p)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	sport := t.sourcePort(p)
	switch p.Proto {
	case model.ProtoTCP:
		c, err := t.dialStream(ns, p, sport, unix.IPPROTO_TCP, timeout)
		if err != nil {
			return sport, err
		}
		return sport, closeReset(c)
	case model.ProtoUDP:
		return sport, t.udpEcho(ns, p, sport, timeout)
	case model.ProtoSCTP:
		if t.SCTP == "kernel" {
			c, err := t.dialStream(ns, p, sport, unix.IPPROTO_SCTP, timeout)
			if err != nil {
				return sport, err
			}
			return sport, c.Close()
		}
		return sport, t.sctpRawInit(ns, p, sport, timeout, false)
	case ProtoICMP, ProtoICMPv6:
		if (p.Proto == ProtoICMP) != p.Dst.Is4() {
			return 0, fmt.Errorf("probe %s: the ICMP version does not match the address family", p)
		}
		return sport, ping(ns, p, sport, timeout)
	}
	return sport, fmt.Errorf("probe %s: unknown protocol", p)
}

// ping sends one ICMP echo request from p.Src to p.Dst with identifier
// id (which conntrack uses as the flow's port, so each attempt is a new
// flow) and waits up to timeout for the reply carrying its token: nil
// when it came, ErrBlocked when not. It uses a ping socket (SOCK_DGRAM,
// IPPROTO_ICMP{,V6}: the kernel fills in identifier and checksum and
// hands back only the replies to it), which the topology's
// ping_group_range allows.
func ping(ns *NS, p Probe, id uint16, timeout time.Duration) error {
	proto, request, reply := unix.IPPROTO_ICMP, byte(8), byte(0) // echo request, echo reply (RFC 792)
	if p.Dst.Is6() {
		proto, request, reply = unix.IPPROTO_ICMPV6, 128, 129 // RFC 4443
	}
	fd, err := boundSocket(ns, p.Src, id, unix.SOCK_DGRAM, proto)
	if err != nil {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	if err := unix.Connect(fd, sockaddr(p.Dst, 0)); err != nil {
		unix.Close(fd)
		return fmt.Errorf("probe %s: connect: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p.String())
	defer f.Close()
	msg := make([]byte, 8+16) // type, code, checksum, identifier, sequence; then the token
	msg[0], msg[7] = request, 1
	rand.Read(msg[8:])
	if _, err := f.Write(msg); err != nil {
		return fmt.Errorf("probe %s: send: %w", p, err)
	}
	if err := f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 256)
	for {
		n, err := f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrBlocked
		}
		if err != nil {
			return fmt.Errorf("probe %s: receive: %w", p, err)
		}
		if n == len(msg) && buf[0] == reply && bytes.Equal(buf[8:n], msg[8:]) {
			return nil
		}
	}
}

// flowKey names a connection's first packet as a server sees it.
type flowKey struct {
	proto    uint8
	src, dst netip.AddrPort
}

// arrived records that a server received the first packet of a flow.
func (t *Topology) arrived(proto uint8, src, dst netip.AddrPort) {
	k := flowKey{proto, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
	t.mu.Lock()
	if t.seen == nil {
		t.seen = map[flowKey]bool{}
	}
	t.seen[k] = true
	t.mu.Unlock()
}

// Arrived tells whether the server at p.Dst received the first packet of
// the attempt of p from source port sport: for an attempt that timed
// out, whether the firewall forwarded it after all (the answer was only
// slow).
func (t *Topology) Arrived(p Probe, sport uint16) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen[flowKey{p.Proto, netip.AddrPortFrom(p.Src, sport), netip.AddrPortFrom(p.Dst, p.Port)}]
}

// SourcesSeen returns the source addresses with which the server at
// p.Dst:p.Port received the first packet of a p.Proto flow from source
// port sport: the pod's own address, or the address NAT rewrote it to
// (NAT keeps the source port when it is free, as it is here).
func (t *Topology) SourcesSeen(p Probe, sport uint16) []netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	dst := netip.AddrPortFrom(p.Dst, p.Port)
	var out []netip.Addr
	for k := range t.seen {
		if k.proto == p.Proto && k.dst == dst && k.src.Port() == sport {
			out = append(out, k.src.Addr())
		}
	}
	return out
}

// DialTCP opens a TCP connection for p (a fresh source port) and returns
// it; the servers echo what they receive.
func (t *Topology) DialTCP(p Probe, timeout time.Duration) (net.Conn, error) {
	ns, err := t.nsOf(p.Src)
	if err != nil {
		return nil, err
	}
	f, err := t.dialStream(ns, p, t.sourcePort(p), unix.IPPROTO_TCP, timeout)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	return c, nil
}

// dialStream connects a SOCK_STREAM socket (TCP or SCTP) from p.Src,
// waiting for the connection in the runtime's poller.
func (t *Topology) dialStream(ns *NS, p Probe, sport uint16, proto int, timeout time.Duration) (*os.File, error) {
	fd, err := boundSocket(ns, p.Src, sport, unix.SOCK_STREAM, proto)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	deadline := time.Now().Add(timeout)
	err = unix.Connect(fd, sockaddr(p.Dst, p.Port))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, fmt.Errorf("probe %s: connect: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p.String())
	if err == nil {
		return f, nil
	}
	if err := f.SetWriteDeadline(deadline); err != nil {
		f.Close()
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	// The callback runs before any wait: a connection that completed
	// before the fd's readiness was last reset is seen here, not missed.
	var soerr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soerr = err
			return true
		case v != 0:
			soerr = syscall.Errno(v)
			return true
		}
		_, err = unix.Getpeername(int(fd))
		return !errors.Is(err, unix.ENOTCONN) // not connected yet: wait
	})
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		closeReset(f)
		return nil, ErrBlocked
	}
	if werr == nil {
		werr = soerr
	}
	if werr != nil {
		f.Close()
		return nil, fmt.Errorf("probe %s: connect: %w", p, werr)
	}
	return f, nil
}

// closeReset closes a TCP socket with a reset, so that neither end keeps
// TIME_WAIT state.
func closeReset(f *os.File) error {
	rc, err := f.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		})
	}
	return f.Close()
}

// DialUDP returns a UDP socket from p.Src (a fresh source port)
// connected to p.Dst:p.Port; the servers echo each datagram.
func (t *Topology) DialUDP(p Probe) (net.Conn, error) {
	ns, err := t.nsOf(p.Src)
	if err != nil {
		return nil, err
	}
	return t.dialUDP(ns, p, t.sourcePort(p))
}

func (t *Topology) dialUDP(ns *NS, p Probe, sport uint16) (net.Conn, error) {
	fd, err := boundSocket(ns, p.Src, sport, unix.SOCK_DGRAM, 0)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	if err := unix.Connect(fd, sockaddr(p.Dst, p.Port)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("probe %s: connect: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p.String())
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", p, err)
	}
	return c, nil
}

// Echo sends a random token on c and waits up to timeout for it to come
// back: nil when it did, ErrBlocked on timeout.
func Echo(c net.Conn, timeout time.Duration) error {
	var token [16]byte
	rand.Read(token[:])
	if err := c.SetDeadline(time.Time{}); err != nil {
		return err
	}
	if _, err := c.Write(token[:]); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	got := 0
	for {
		n, err := c.Read(buf[got:])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrBlocked
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if _, stream := c.(*net.TCPConn); stream {
			got += n
			if got < len(token) {
				continue
			}
			n, got = got, 0
		}
		if bytes.Equal(buf[:n], token[:]) {
			return nil
		}
	}
}

func (t *Topology) udpEcho(ns *NS, p Probe, sport uint16, timeout time.Duration) error {
	c, err := t.dialUDP(ns, p, sport)
	if err != nil {
		return err
	}
	defer c.Close()
	err = Echo(c, timeout)
	if err != nil && !errors.Is(err, ErrBlocked) {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	return err
}

// Result is a probe's outcome.
type Result struct {
	Probe
	Passed bool
	Err    error // neither a pass nor a timeout
	// Attempts made: a first timeout is confirmed by a second attempt
	// (from a fresh source port) before the probe counts as blocked.
	Attempts int
}

// Check probes once and, when the attempt timed out, once more: a probe
// counts as blocked only when both attempts timed out.
func (t *Topology) Check(ctx context.Context, p Probe, timeout time.Duration) Result {
	r := Result{Probe: p}
	for r.Attempts < 2 {
		r.Attempts++
		err := t.Attempt(ctx, p, timeout)
		switch {
		case err == nil:
			r.Passed = true
			return r
		case errors.Is(err, ErrBlocked):
			continue
		default:
			r.Err = err
			return r
		}
	}
	return r
}

// Run checks every probe, at most parallel at once, and returns the
// results in the probes' order.
func (t *Topology) Run(ctx context.Context, probes []Probe, timeout time.Duration, parallel int) []Result {
	out := make([]Result, len(probes))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, p := range probes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = t.Check(ctx, p, timeout)
		}()
	}
	wg.Wait()
	return out
}

// listenBacklog is the servers' accept queue (net.core.somaxconn is
// raised to match in their namespaces): a full queue drops SYNs, which a
// probe would take for a firewall drop.
const listenBacklog = 16384

// startServers listens on every address of the cluster and outside
// namespaces, on every port of the plan: TCP (echo), UDP (echo) and
// SCTP.
func (t *Topology) startServers() error {
	if err := t.detectSCTP(); err != nil {
		return err
	}
	for _, ns := range []*NS{t.Cluster, t.Outside} {
		addrs := t.Plan.Outside
		if ns == t.Cluster {
			addrs = t.Plan.ClusterAddrs()
		}
		for _, a := range addrs {
			for _, port := range t.Plan.Ports {
				if err := t.serveTCP(ns, a, port); err != nil {
					return err
				}
				if err := t.serveUDP(ns, a, port); err != nil {
					return err
				}
				if t.SCTP == "kernel" {
					if err := t.serveSCTP(ns, a, port); err != nil {
						return err
					}
				}
			}
			if t.SCTP == "raw" {
				if err := t.serveSCTPRaw(ns, a); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// detectSCTP decides between kernel SCTP sockets and raw INIT probes.
func (t *Topology) detectSCTP() error {
	fd, err := t.Cluster.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	switch {
	case err == nil:
		unix.Close(fd)
		t.SCTP = "kernel"
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.ESOCKTNOSUPPORT):
		t.SCTP = "raw"
	default:
		return fmt.Errorf("probe for SCTP sockets: %w", err)
	}
	return nil
}

func (t *Topology) serveTCP(ns *NS, a netip.Addr, port uint16) error {
	fd, err := boundSocket(ns, a, port, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return err
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		unix.Close(fd)
		return fmt.Errorf("listen tcp %s: %w", netip.AddrPortFrom(a, port), err)
	}
	f := os.NewFile(uintptr(fd), "")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", netip.AddrPortFrom(a, port), err)
	}
	t.onClose(l.Close)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var mu sync.Mutex
		open := map[net.Conn]bool{}
		var conns sync.WaitGroup
		defer func() {
			// Close what is still open: a peer whose reset never came must
			// not hold Close up until keepalive gives up.
			mu.Lock()
			for c := range open {
				c.Close()
			}
			mu.Unlock()
			conns.Wait()
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
				t.arrived(model.ProtoTCP, ra.AddrPort(), netip.AddrPortFrom(a, port))
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				io.Copy(c, c)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	}()
	return nil
}

func (t *Topology) serveUDP(ns *NS, a netip.Addr, port uint16) error {
	fd, err := boundSocket(ns, a, port, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", netip.AddrPortFrom(a, port), err)
	}
	t.onClose(c.Close)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if ua, ok := from.(*net.UDPAddr); ok {
				t.arrived(model.ProtoUDP, ua.AddrPort(), netip.AddrPortFrom(a, port))
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return nil
}

// serveSCTP listens with a kernel SCTP socket; the kernel completes the
// four-way handshake before accept, so accepted associations are closed
// at once.
func (t *Topology) serveSCTP(ns *NS, a netip.Addr, port uint16) error {
	fd, err := boundSocket(ns, a, port, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return err
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		unix.Close(fd)
		return fmt.Errorf("listen sctp %s: %w", netip.AddrPortFrom(a, port), err)
	}
	f := os.NewFile(uintptr(fd), "")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("listen sctp %s: %w", netip.AddrPortFrom(a, port), err)
	}
	t.onClose(f.Close)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			var nfd int
			var from unix.Sockaddr
			var aerr error
			err := rc.Read(func(fd uintptr) bool {
				nfd, from, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
				return !errors.Is(aerr, unix.EAGAIN)
			})
			if err != nil {
				return
			}
			if aerr == nil {
				unix.Close(nfd)
				if src, ok := addrPortOf(from); ok {
					t.arrived(model.ProtoSCTP, src, netip.AddrPortFrom(a, port))
				}
			}
		}
	}()
	return nil
}

func addrPortOf(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}
