package bootenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// KeepLeases renews the leases Prepare got, each from its server at T1 and
// from any server after T2 (RFC 2131 §4.4.5), until ctx ends: the agent
// can wait in the pool for days, and a lease the server lets lapse is an
// address it may give to another machine. A renewal that is refused (NAK)
// or a lease that expires starts over with a new DHCP exchange on that
// link, and a new address replaces the old one (with the new lease's
// routes and DNS). Each step is logged; the call returns when ctx ends.
func KeepLeases(ctx context.Context, leases []Lease, log *slog.Logger) {
	done := make(chan struct{}, len(leases))
	for _, l := range leases {
		go func() {
			defer func() { done <- struct{}{} }()
			if l.ack == nil {
				return
			}
			c, err := nclient4.New(l.Interface, nclient4.WithTimeout(5*time.Second), nclient4.WithRetry(2))
			if err != nil {
				log.Error("DHCP lease will not be renewed", "interface", l.Interface, "err", err)
				return
			}
			defer c.Close()
			keepLease(ctx, c, l, log.With("interface", l.Interface))
		}()
	}
	for range leases {
		<-done
	}
}

// dhcpClient is what keepLease needs of nclient4.Client.
type dhcpClient interface {
	Renew(ctx context.Context, lease *nclient4.Lease, modifiers ...dhcpv4.Modifier) (*nclient4.Lease, error)
	Request(ctx context.Context, modifiers ...dhcpv4.Modifier) (*nclient4.Lease, error)
}

var _ dhcpClient = (*nclient4.Client)(nil)

// keepLease renews one lease until ctx ends.
func keepLease(ctx context.Context, c dhcpClient, l Lease, log *slog.Logger) {
	cur := &nclient4.Lease{Offer: l.ack, ACK: l.ack, CreationTime: l.got}
	addr := l.ack.YourIPAddr
	id := dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, l.ack.ClientHWAddr...)))
	for {
		ack := cur.ACK
		lt := TimesOf(cur.CreationTime, ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0))
		if lt.Renew.IsZero() {
			log.Info("DHCP lease has no end: nothing to renew", "address", addr)
			return
		}
		wait := time.Until(lt.Renew)
		for {
			if !sleep(ctx, wait) {
				return
			}
			now := time.Now()
			if !now.Before(lt.Expire) {
				log.Error("DHCP lease expired without a renewal: asking for a new one", "address", addr)
				next, err := fresh(ctx, c, l.Interface, addr, id, log)
				if err != nil {
					wait = 10 * time.Second
					continue
				}
				cur, addr = next, next.ACK.YourIPAddr
				break
			}
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			next, err := c.Renew(rctx, cur, id)
			cancel()
			var nak *nclient4.ErrNak
			switch {
			case err == nil:
				log.Info("DHCP lease renewed", "address", addr, "lease", next.ACK.IPAddressLeaseTime(0), "server", next.ACK.ServerIdentifier())
				cur = next
			case errors.As(err, &nak):
				log.Error("DHCP server refused the renewal: asking for a new lease", "address", addr, "err", err)
				if next, err = fresh(ctx, c, l.Interface, addr, id, log); err != nil {
					wait = lt.RetryIn(time.Now())
					continue
				}
				cur, addr = next, next.ACK.YourIPAddr
			default:
				wait = lt.RetryIn(time.Now())
				log.Warn("DHCP renewal failed; retrying", "address", addr, "err", err, "retry_in", wait, "expires", lt.Expire.UTC().Format(time.RFC3339))
				continue
			}
			break
		}
	}
}

// fresh runs a whole DHCP exchange and puts the address it brings on the
// link in place of old.
func fresh(ctx context.Context, c dhcpClient, iface string, old net.IP, id dhcpv4.Modifier, log *slog.Logger) (*nclient4.Lease, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := c.Request(rctx, id)
	if err != nil {
		log.Error("DHCP: no new lease", "err", err)
		return nil, err
	}
	if !l.ACK.YourIPAddr.Equal(old) {
		if err := replaceAddress(iface, old, l.ACK); err != nil {
			log.Error("DHCP: new address not configured", "address", l.ACK.YourIPAddr, "err", err)
			return nil, err
		}
	}
	log.Info("DHCP: new lease", "address", l.ACK.YourIPAddr, "was", old, "lease", l.ACK.IPAddressLeaseTime(0))
	return l, nil
}

// replaceAddress configures iface from ack as the first lease did (its
// address, routes and DNS, u-root's dhclient) and removes old.
func replaceAddress(iface string, old net.IP, ack *dhcpv4.DHCPv4) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return err
	}
	if err := dhclient.Configure4(link, ack); err != nil {
		return fmt.Errorf("configure %s from the new lease: %w", iface, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.IP.Equal(old) {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove %s from %s: %w", old, iface, err)
			}
		}
	}
	return nil
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
