// Package ctrladdr is the format of the controller addresses an agent is
// given, wherever they are written: anvil.controller= on the kernel command
// line (package bootparams), the agent's --controller flag, and the boot
// service's --agent-controller, which renders anvil.controller=.
//
// The value is a comma-separated list of HOST:PORT, one per controller
// replica, such as
//
//	10.0.2.2:7443,10.0.2.3:7443,[fd00::4]:7443
//
// or one DNS name whose records are the replicas (anvil.example.net:7443).
// HOST is an IP address or a DNS name (RFC 1123 host names); PORT is 1 to
// 65535. At most MaxAddrs addresses; the same address twice is refused (it
// would count twice in the agent's failover order).
package ctrladdr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MaxAddrs bounds the number of controller addresses in one list.
const MaxAddrs = 16

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid controller address list")

// List is a checked list of controller addresses (HOST:PORT), in the order
// given.
type List []string

// Parse checks a comma-separated list of HOST:PORT.
func Parse(s string) (List, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalid)
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxAddrs {
		return nil, fmt.Errorf("%w %q: %d addresses, at most %d", ErrInvalid, s, len(parts), MaxAddrs)
	}
	var l List
	seen := make(map[string]int, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		key, err := canonical(p)
		if err != nil {
			return nil, fmt.Errorf("%w %q: address %d: %w", ErrInvalid, s, i+1, err)
		}
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("%w %q: address %d (%s) repeats address %d", ErrInvalid, s, i+1, p, j+1)
		}
		seen[key] = i
		l = append(l, p)
	}
	return l, nil
}

// String is the list as Parse reads it.
func (l List) String() string { return strings.Join(l, ",") }

// Host is the host part of the i-th address: the name its serving
// certificate must be valid for.
func (l List) Host(i int) string {
	h, _, err := net.SplitHostPort(l[i])
	if err != nil { // a List comes from Parse; keep the whole address
		return l[i]
	}
	return h
}

// Name reports whether the list is one DNS name: its records are the
// replicas, which the agent resolves (and resolves again when none answers)
// rather than dialling one fixed address.
func (l List) Name() bool {
	if len(l) != 1 {
		return false
	}
	_, err := netip.ParseAddr(l.Host(0))
	return err != nil
}

// canonical checks one HOST:PORT and returns the form duplicates are found
// by (IP addresses in their canonical text, names in lower case without a
// final dot).
func canonical(a string) (string, error) {
	if a == "" {
		return "", errors.New("empty address")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("%q: want HOST:PORT ([ADDR]:PORT for IPv6): %w", a, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", a, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if strings.Contains(a, "]") != ip.Is6() || ip.Is4In6() {
			return "", fmt.Errorf("%q: write an IPv6 address in brackets and an IPv4 address without them", a)
		}
		return net.JoinHostPort(ip.String(), port), nil
	}
	if err := checkName(host); err != nil {
		return "", fmt.Errorf("%q: %w", a, err)
	}
	return net.JoinHostPort(strings.ToLower(strings.TrimSuffix(host, ".")), port), nil
}

// checkName checks an RFC 1123 host name: dot-separated labels of letters,
// digits and hyphens, none longer than 63 or starting or ending with a
// hyphen, 253 characters in all; one final dot allowed.
func checkName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name (label %q)", h, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host %q is neither an IP address nor a DNS name (character %q)", h, c)
			}
		}
	}
	return nil
}
