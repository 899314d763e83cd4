package firewall

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/firewall/model"
)

var errSocketDone = errors.New("socket done")

// rawSCTP opens a raw IPPROTO_SCTP socket in ns bound to a, registered
// with the runtime's poller.
func rawSCTP(ns *NS, a netip.Addr) (*os.File, error) {
	fd, err := boundSocket(ns, a, 0, unix.SOCK_RAW, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, fmt.Errorf("raw sctp socket on %s: %w", a, err)
	}
	return os.NewFile(uintptr(fd), "sctp-raw "+a.String()), nil
}

// readSCTP receives one SCTP packet from a raw socket, stripping the
// IPv4 header, and returns it with its source address. An error wrapping
// errSocketDone means the socket can be read no more (closed, or its
// deadline passed: then it also wraps os.ErrDeadlineExceeded); other
// errors concern one packet.
func readSCTP(f *os.File, v4 bool, buf []byte) ([]byte, netip.Addr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("%w: %w", errSocketDone, err)
	}
	var n int
	var from unix.Sockaddr
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("%w: %w", errSocketDone, err)
	}
	if rerr != nil {
		return nil, netip.Addr{}, rerr
	}
	var src netip.Addr
	switch sa := from.(type) {
	case *unix.SockaddrInet4:
		src = netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		src = netip.AddrFrom16(sa.Addr)
	}
	b := buf[:n]
	if v4 {
		if b, err = ipv4Payload(b); err != nil {
			return nil, src, err
		}
	}
	return b, src, nil
}

func writeSCTP(f *os.File, dst netip.Addr, pkt []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), pkt, 0, sockaddr(dst, 0))
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err == nil {
		err = werr
	}
	return err
}

// serveSCTPRaw answers every INIT to a on one of the plan's ports with an
// INIT ACK, as a listening SCTP endpoint would. While this raw socket is
// open the kernel sends no ICMP protocol-unreachable for SCTP packets to
// a.
func (t *Topology) serveSCTPRaw(ns *NS, a netip.Addr) error {
	f, err := rawSCTP(ns, a)
	if err != nil {
		return err
	}
	t.onClose(f.Close)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		buf := make([]byte, 2048)
		for {
			b, src, err := readSCTP(f, a.Is4(), buf)
			if errors.Is(err, errSocketDone) {
				return
			}
			if err != nil {
				continue
			}
			p, err := parseSCTP(b)
			if err != nil || p.Chunk != sctpInit || p.VTag != 0 || !slices.Contains(t.Plan.Ports, p.DstPort) {
				continue
			}
			t.arrived(model.ProtoSCTP, netip.AddrPortFrom(src.Unmap(), p.SrcPort), netip.AddrPortFrom(a, p.DstPort))
			ack := marshalSCTPInit(sctpPacket{
				SrcPort: p.DstPort, DstPort: p.SrcPort, VTag: p.InitiateTag,
				InitiateTag: ^p.InitiateTag,
			}, true)
			writeSCTP(f, src, ack)
		}
	}()
	return nil
}

// sctpRawInit sends an INIT from p.Src:sport and waits for the INIT ACK
// that names its initiate tag. badSum corrupts the INIT's checksum (a
// negative control: conntrack must then see an invalid packet).
func (t *Topology) sctpRawInit(ns *NS, p Probe, sport uint16, timeout time.Duration, badSum bool) error {
	f, err := rawSCTP(ns, p.Src)
	if err != nil {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	// Until bind and connect the raw socket received every SCTP packet of
	// the namespace (another probe's INIT ACK among them): drop what it
	// queued, and use a random initiate tag so that no other probe's
	// answer can match.
	var cerr error
	rc.Control(func(fd uintptr) {
		if cerr = unix.Connect(int(fd), sockaddr(p.Dst, 0)); cerr != nil {
			return
		}
		var b [2048]byte
		for {
			if _, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_DONTWAIT); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return fmt.Errorf("probe %s: connect raw socket: %w", p, cerr)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	tag := binary.BigEndian.Uint32(rnd[:]) | 1 // never 0
	init := marshalSCTPInit(sctpPacket{SrcPort: sport, DstPort: p.Port, InitiateTag: tag}, false)
	if badSum {
		binary.LittleEndian.PutUint32(init[8:], ^binary.LittleEndian.Uint32(init[8:]))
	}
	if err := f.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	if err := writeSCTP(f, p.Dst, init); err != nil {
		return fmt.Errorf("probe %s: send INIT: %w", p, err)
	}
	buf := make([]byte, 2048)
	for {
		b, src, err := readSCTP(f, p.Src.Is4(), buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrBlocked
		}
		if errors.Is(err, errSocketDone) {
			return fmt.Errorf("probe %s: receive: %w", p, err)
		}
		if err != nil {
			continue
		}
		a, err := parseSCTP(b)
		if err != nil || src != p.Dst || a.SrcPort != p.Port || a.DstPort != sport {
			continue
		}
		if a.Chunk == sctpInitAck && a.VTag == tag {
			return nil
		}
	}
}
