package inventory

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkLinkState asks the running kernel about interface name over
// rtnetlink.
func netlinkLinkState(name string) (linkState, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return linkState{}, fmt.Errorf("netlink: link %s: %w", name, err)
	}
	a := l.Attrs()
	return linkState{
		up:      netlinkLinkUp(a.OperState, a.RawFlags),
		mtu:     uint32(max(a.MTU, 0)),
		permMAC: strings.ToLower(a.PermHWAddr.String()),
	}, nil
}

// netlinkLinkUp decides the link state from IFLA_OPERSTATE and the
// interface flags: up when operationally up or when the lower layer reports
// carrier (IFF_LOWER_UP; drivers such as tun report operstate "unknown").
func netlinkLinkUp(oper netlink.LinkOperState, rawFlags uint32) bool {
	return oper == netlink.OperUp || rawFlags&unix.IFF_LOWER_UP != 0
}
