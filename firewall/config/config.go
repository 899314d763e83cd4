// Package config holds anvil-firewall's settings: where the firewall sits
// (its cluster-facing interfaces), the default verdicts for traffic no
// NetworkPolicy isolates, egress masquerade/SNAT and ingress to Services of
// type LoadBalancer. Flags are parsed in cmd/; this package only describes,
// defaults and validates.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Verdict is a default for traffic that no policy isolates.
type Verdict string

const (
	Allow Verdict = "allow"
	Deny  Verdict = "deny"
)

// Config is everything the compiler needs besides the cluster's objects.
type Config struct {
	// Table is the nftables table (family inet) anvil-firewall owns and
	// replaces as a whole.
	Table string
	// ClusterInterfaces face the cluster network. Traffic forwarded from
	// one of them to any other interface is egress; traffic forwarded to
	// one of them from any other interface is ingress. A trailing "*"
	// matches a prefix ("vlan*"), as in nft.
	ClusterInterfaces []string
	// DefaultEgress applies to traffic leaving the cluster from pods that
	// no egress policy selects (and from addresses that are not pods).
	// Deny makes a default-deny egress cluster.
	DefaultEgress Verdict
	// DefaultIngress applies to traffic entering the cluster to addresses
	// that no ingress policy selects.
	DefaultIngress Verdict
	// Masquerade rewrites the source of egress traffic to the outgoing
	// interface's address.
	Masquerade bool
	// SNATv4 and SNATv6, when valid, rewrite the source of egress traffic
	// to this address instead (they take precedence over Masquerade for
	// their family).
	SNATv4, SNATv6 netip.Addr
	// LoadBalancerIngress accepts traffic entering the cluster to the
	// ingress IPs of Services of type LoadBalancer, on their ports.
	LoadBalancerIngress bool
	// LogDrops logs dropped packets through the kernel's nf_log, at most
	// LogRate per second (burst LogBurst).
	LogDrops bool
	LogRate  uint32
	LogBurst uint32
	// Debounce is how long the watcher waits for more changes before a
	// reconcile; Resync forces a reconcile even without changes.
	Debounce time.Duration
	Resync   time.Duration
}

// Defaults returns a configuration for a firewall in front of a cluster on
// interface "cluster0": non-selected traffic allowed, no NAT.
func Defaults() Config {
	return Config{
		Table:             "anvil",
		ClusterInterfaces: []string{"cluster0"},
		DefaultEgress:     Allow,
		DefaultIngress:    Allow,
		LogRate:           10,
		LogBurst:          20,
		Debounce:          100 * time.Millisecond,
		Resync:            5 * time.Minute,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Table == "" || len(c.Table) > 64 {
		errs = append(errs, fmt.Errorf("table name %q: must be 1..64 characters", c.Table))
	}
	if len(c.ClusterInterfaces) == 0 {
		errs = append(errs, errors.New("at least one cluster interface is required"))
	}
	for _, n := range c.ClusterInterfaces {
		if n == "" || n == "*" || len(n) > 15 {
			errs = append(errs, fmt.Errorf("cluster interface %q: must be 1..15 characters (a trailing * matches a prefix)", n))
		}
	}
	for name, v := range map[string]Verdict{"default egress": c.DefaultEgress, "default ingress": c.DefaultIngress} {
		if v != Allow && v != Deny {
			errs = append(errs, fmt.Errorf("%s %q: must be %q or %q", name, v, Allow, Deny))
		}
	}
	if c.SNATv4.IsValid() && !c.SNATv4.Is4() {
		errs = append(errs, fmt.Errorf("snat-v4 %s is not an IPv4 address", c.SNATv4))
	}
	if c.SNATv6.IsValid() && (!c.SNATv6.Is6() || c.SNATv6.Is4In6()) {
		errs = append(errs, fmt.Errorf("snat-v6 %s is not an IPv6 address", c.SNATv6))
	}
	if c.LogDrops && c.LogRate == 0 {
		errs = append(errs, errors.New("log rate must be > 0 when logging drops"))
	}
	if c.Debounce < 0 || c.Resync < 0 {
		errs = append(errs, errors.New("debounce and resync must not be negative"))
	}
	return errors.Join(errs...)
}
