package lldp

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Listen starts listening on each named interface not listened on yet:
// one AF_PACKET raw socket per interface, bound to it for EtherType 0x88cc,
// joined to the nearest-bridge group address (bridges never forward it,
// so it is accepted only when asked for). The sockets are opened before
// Listen returns, in the caller's network namespace; reading stops and the
// sockets close when ctx ends. An interface may be down: frames arrive
// once it comes up. The error joins the interfaces that could not be
// opened (they need CAP_NET_RAW); the others listen regardless.
func (c *Collector) Listen(ctx context.Context, ifaces ...string) error {
	var errs []error
	for _, name := range ifaces {
		if err := c.listen(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("listen for LLDP on %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Collector) listen(ctx context.Context, name string) error {
	// Protocol 0: the socket receives nothing until bind names the
	// interface and the EtherType, so no other interface's frame slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket(AF_PACKET, SOCK_RAW): %w", err)
	}
	f := os.NewFile(uintptr(fd), "lldp:"+name)
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("SIOCGIFINDEX: %w", err)
	}
	index := int(ifr.Uint32())
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(EtherType), Ifindex: index}); err != nil {
		return fmt.Errorf("bind to ifindex %d: %w", index, err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
	copy(mreq.Address[:], NearestBridge[:])
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fmt.Errorf("PACKET_ADD_MEMBERSHIP %x: %w", NearestBridge, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	up := func() bool {
		var flags uint16
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			r, err := unix.NewIfreq(name)
			if err != nil {
				ierr = err
				return
			}
			if ierr = unix.IoctlIfreq(int(fd), unix.SIOCGIFFLAGS, r); ierr == nil {
				flags = r.Uint16()
			}
		}); err != nil || ierr != nil {
			return false
		}
		return flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0
	}
	if !c.add(name, up) {
		return nil // listened on already; the deferred Close drops this socket
	}
	ok = true
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go c.read(name, rc)
	return nil
}

// read records the frames arriving on one socket until it is closed.
func (c *Collector) read(name string, rc interface {
	Read(func(uintptr) bool) error
}) {
	buf := make([]byte, 9216) // a jumbo frame; LLDPDUs are at most 1500 bytes
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if errors.Is(err, unix.ENETDOWN) {
			// The link was down (the agent listens before it brings its
			// links up) or went down: the kernel reports that once on a
			// bound packet socket and delivers frames again once the
			// link is up.
			continue
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				c.log.Warn("LLDP listener stopped", "interface", name, "err", err)
			}
			return
		}
		// Frames this host sends itself come back as PACKET_OUTGOING.
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if err := c.observe(name, buf[:n]); err != nil {
			c.log.Warn("LLDP frame not understood", "interface", name, "err", err)
		}
	}
}
