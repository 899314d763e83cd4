// Package ra answers IPv6 Router Solicitations on the provisioning network
// with a Router Advertisement that offers nothing (RFC 4861 §4.2, §6.2.6):
// router lifetime 0 (not a default router), no prefix, neither managed nor
// other configuration (no DHCPv6). iPXE configures IPv6 beside DHCPv4 and
// waits for its router solicitations to be answered before it fetches its
// script: on a segment without an IPv6 router that wait is about 16 s of
// every network boot (measured in the lab with Debian's iPXE 1.0.0+git-
// 20190125). This answer ends it at once. A lifetime of 0 never makes this
// host a default router; the M and O flags it says are 0, and a host that
// hears them may stop asking DHCPv6 (Linux takes the flags of each
// advertisement as it comes), which is why it runs only where anvil owns
// the segment (DHCP full mode, an isolated provisioning network) and can be
// turned off (--dhcp-ipv6-ra=false).
//
// A solicitation from a link-local address is answered to that address
// (RFC 4861 §6.2.6 allows it), at most ten a second; one from the
// unspecified address to all nodes, at most every 3 s
// (MIN_DELAY_BETWEEN_RAS). Advertise is
// the pure core; Responder is the socket loop.
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// ICMPv6 types (RFC 4861 §4.1, §4.2) and the source link-layer address
// option (§4.6.1).
const (
	typeRouterSolicitation  = 133
	typeRouterAdvertisement = 134
	optSourceLinkLayer      = 1
)

// Advertise is the Router Advertisement's ICMPv6 message (checksum left
// zero: the kernel fills it in): hop limit unspecified, no M or O flag,
// router lifetime 0, reachable time and retransmission timer unspecified,
// then the sender's link-layer address when mac is given.
func Advertise(mac net.HardwareAddr) []byte {
	b := make([]byte, 16, 24)
	b[0] = typeRouterAdvertisement
	// b[1] code 0, b[2:4] checksum, b[4] cur hop limit 0, b[5] flags 0,
	// b[6:8] router lifetime 0, b[8:12] reachable 0, b[12:16] retrans 0.
	if len(mac) == 6 {
		b = append(b, optSourceLinkLayer, 1)
		b = append(b, mac...)
	}
	return b
}

// IsSolicitation reports whether an ICMPv6 message is a valid Router
// Solicitation (RFC 4861 §6.1.1: type 133, code 0, at least 8 bytes; the
// hop limit of 255 is checked by the caller).
func IsSolicitation(msg []byte) bool {
	return len(msg) >= 8 && msg[0] == typeRouterSolicitation && msg[1] == 0
}

// Responder answers solicitations on one interface.
type Responder struct {
	iface *net.Interface
	pc    *ipv6.PacketConn
	log   *slog.Logger
	// Rate limits: a flood of solicitations gets a trickle of
	// advertisements.
	mu                   sync.Mutex
	lastUnicast, lastAll time.Time
}

// Listen opens the ICMPv6 socket on iface and joins all-routers (ff02::2).
func Listen(iface string, log *slog.Logger) (*Responder, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("router advertisements on %s: %w", iface, err)
	}
	pc := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(typeRouterSolicitation)
	errs := []error{
		pc.SetICMPFilter(&f),
		pc.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}),
		pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true),
		// Neighbor discovery messages go out with hop limit 255 (§6.1.2).
		pc.SetMulticastHopLimit(255),
		pc.SetHopLimit(255),
		pc.SetMulticastInterface(ifi),
		pc.SetMulticastLoopback(false),
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, fmt.Errorf("router advertisements on %s: %w", iface, err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Responder{iface: ifi, pc: pc, log: log}, nil
}

// Serve answers until ctx ends, then closes the socket.
func (r *Responder) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.pc.Close() })
	defer stop()
	buf := make([]byte, 1500)
	ra := Advertise(r.iface.HardwareAddr)
	for {
		n, cm, src, err := r.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			r.log.Warn("router solicitation not read", "err", err)
			continue
		}
		if cm == nil || cm.IfIndex != r.iface.Index || cm.HopLimit != 255 || !IsSolicitation(buf[:n]) {
			continue // another link, or not from the link itself (§6.1.1)
		}
		to := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: r.iface.Name}
		if a, ok := src.(*net.IPAddr); ok && a.IP.IsLinkLocalUnicast() {
			to = &net.IPAddr{IP: a.IP, Zone: r.iface.Name}
		}
		if !r.due(to.IP.IsMulticast()) {
			continue
		}
		if _, err := r.pc.WriteTo(ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: r.iface.Index}, to); err != nil {
			r.log.Warn("router advertisement not sent", "to", to.String(), "err", err)
			continue
		}
		r.log.Debug("router advertisement (nothing offered)", "solicited_by", src.String())
	}
}

func (r *Responder) due(multicast bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, gap := &r.lastUnicast, 100*time.Millisecond
	if multicast {
		last, gap = &r.lastAll, 3*time.Second
	}
	now := time.Now()
	if now.Sub(*last) < gap {
		return false
	}
	*last = now
	return true
}
