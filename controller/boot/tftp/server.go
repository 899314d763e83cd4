package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Server serves files by name over TFTP.
type Server struct {
	files   map[string]string // name → path
	log     *slog.Logger
	timeout time.Duration
	retries int
	// slots bounds the transfers running at once (one goroutine and one
	// socket each).
	slots chan struct{}

	wg       sync.WaitGroup
	mu       sync.Mutex
	lastBusy time.Time
}

// DefaultMaxTransfers is how many transfers run at once by default: a
// rack's servers booting together, not a flood.
const DefaultMaxTransfers = 64

// WithMaxTransfers bounds the transfers running at once; a request beyond
// it is answered "busy" at once (the client retries).
func WithMaxTransfers(n int) Option {
	return func(s *Server) { s.slots = make(chan struct{}, max(n, 1)) }
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRetransmit sets the retransmission timeout and how many times a
// block is sent before the transfer is abandoned (default 1 s, 5).
func WithRetransmit(timeout time.Duration, retries int) Option {
	return func(s *Server) { s.timeout, s.retries = timeout, retries }
}

// New serves files (name → path on disk).
func New(files map[string]string, opts ...Option) (*Server, error) {
	for name, p := range files {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("TFTP file %s: %q is not a readable file", name, p)
		}
	}
	s := &Server{files: files, log: slog.Default(), timeout: time.Second, retries: 5, slots: make(chan struct{}, DefaultMaxTransfers)}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Serve answers requests on pc (port 69) until ctx ends; each transfer
// runs on its own socket (its transfer ID, RFC 1350 §4).
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 1500)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("TFTP read: %w", err)
		}
		req, err := parseRequest(buf[:n])
		if err != nil {
			s.log.Warn("malformed TFTP request", "from", peer.String(), "err", err)
			pc.WriteTo(encodeError(errIllegal, err.Error()), peer) //nolint:errcheck // best effort to a peer that sent junk
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.busy(peer, req.filename)
			pc.WriteTo(encodeError(errUndefined, "server busy: retry"), peer) //nolint:errcheck // best effort; the client retries its request
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			if err := s.transfer(ctx, peer, req); err != nil {
				s.log.Warn("TFTP transfer failed", "peer", peer.String(), "file", req.filename, "err", err)
			}
		}()
	}
}

// busy logs a refused request, at most once a second.
func (s *Server) busy(peer net.Addr, file string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lastBusy) < time.Second {
		return
	}
	s.lastBusy = time.Now()
	s.log.Warn("TFTP request refused: every transfer slot is taken", "peer", peer.String(), "file", file, "slots", cap(s.slots))
}

// transfer sends one file to peer from a new socket.
func (s *Server) transfer(ctx context.Context, peer net.Addr, req request) error {
	local := &net.UDPAddr{}
	if u, ok := peer.(*net.UDPAddr); ok && u.IP.IsLoopback() {
		local.IP = u.IP
	}
	c, err := net.ListenUDP("udp", local)
	if err != nil {
		return fmt.Errorf("transfer socket: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	send := func(b []byte) error {
		_, err := c.WriteTo(b, peer)
		return err
	}
	if req.write {
		return errors.Join(errors.New("write request refused"), send(encodeError(errAccess, "this server is read-only")))
	}
	if req.mode != "octet" && req.mode != "netascii" {
		return errors.Join(fmt.Errorf("mode %q", req.mode), send(encodeError(errIllegal, "mode must be octet")))
	}
	p, ok := s.files[req.filename]
	if !ok {
		return errors.Join(fmt.Errorf("no file %q", req.filename), send(encodeError(errNotFound, "no such file: "+req.filename)))
	}
	f, err := os.Open(p)
	if err != nil {
		return errors.Join(err, send(encodeError(errUndefined, "cannot open "+req.filename)))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return errors.Join(err, send(encodeError(errUndefined, "cannot stat "+req.filename)))
	}
	neg, err := negotiate(req.options, st.Size())
	if err != nil {
		return errors.Join(err, send(encodeError(errOptionDenied, err.Error())))
	}
	timeout := s.timeout
	if neg.timeout > 0 {
		timeout = time.Duration(neg.timeout) * time.Second
	}
	x := &sender{c: c, peer: peer, timeout: timeout, retries: s.retries}
	if len(neg.oack) > 0 {
		// The client acknowledges the OACK with ACK 0.
		if err := x.exchange(encodeOACK(neg.oack), 0); err != nil {
			return fmt.Errorf("option acknowledgement: %w", err)
		}
	}
	block := make([]byte, neg.blockSize)
	var seq uint16 = 1
	var sent int64
	for {
		n, err := io.ReadFull(f, block)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.Join(fmt.Errorf("read %s: %w", p, err), send(encodeError(errUndefined, "read error")))
		}
		// Block numbers wrap from 65535 to 0 (the common rollover).
		if err := x.exchange(encodeData(seq, block[:n]), seq); err != nil {
			return fmt.Errorf("block %d: %w", seq, err)
		}
		sent += int64(n)
		if n < neg.blockSize {
			s.log.Info("TFTP sent", "file", req.filename, "peer", peer.String(), "bytes", sent, "blksize", neg.blockSize)
			return nil
		}
		seq++
	}
}

// sender sends a packet and waits for its ACK, retransmitting.
type sender struct {
	c       *net.UDPConn
	peer    net.Addr
	timeout time.Duration
	retries int
	buf     [1500]byte
}

func (x *sender) exchange(pkt []byte, want uint16) error {
	for try := 0; try < x.retries; try++ {
		if _, err := x.c.WriteTo(pkt, x.peer); err != nil {
			return err
		}
		deadline := time.Now().Add(x.timeout)
		for {
			x.c.SetReadDeadline(deadline) //nolint:errcheck // a UDP socket always takes it
			n, from, err := x.c.ReadFrom(x.buf[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // retransmit
			}
			if err != nil {
				return err
			}
			if from.String() != x.peer.String() {
				// Another host's packet on our TID (RFC 1350 §4).
				x.c.WriteTo(encodeError(errUnknownTID, "unknown transfer ID"), from) //nolint:errcheck // best effort
				continue
			}
			block, ok, err := parseACK(x.buf[:n])
			if err != nil {
				return err
			}
			if ok && block == want {
				return nil
			}
			// A duplicate ACK of the previous block: keep waiting (no
			// resend on it, avoiding the Sorcerer's Apprentice bug).
		}
	}
	return fmt.Errorf("no acknowledgement after %d tries of %v", x.retries, x.timeout)
}
