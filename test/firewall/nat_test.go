package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

// TestNAT checks the egress NAT options with real connections: the
// outside servers record the source address each first packet arrived
// with. Masquerade rewrites a pod's connections to fw's uplink address,
// SNAT to the configured one, without NAT the pod's address arrives, and
// connections from outside to a pod are never rewritten.
func TestNAT(t *testing.T) {
	topo := newTopology(t)
	fw := newFirewall(t, topo)
	plan := topo.Plan
	// SNAT targets: extra addresses on fw's uplink (on the outside's
	// subnet, so replies come back to fw). NODAD: usable at once.
	snat4, snat6 := netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("2001:db8:1::77")
	nl := topo.FW.Netlink()
	up, err := nl.LinkByName(UplinkIf)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(snat4, 32), netip.PrefixFrom(snat6, 128)} {
		addr, err := netlink.ParseAddr(a.String())
		if err != nil {
			t.Fatal(err)
		}
		addr.Flags = unix.IFA_F_NODAD
		if err := nl.AddrAdd(up, addr); err != nil {
			t.Fatalf("add %v to %s: %v", a, UplinkIf, err)
		}
	}
	// Masquerade picks one of fw's addresses on the uplink, by the
	// kernel's source address selection: any of them is right.
	uplink := func(v4 bool) []netip.Addr {
		addrs, err := nl.AddrList(up, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		var out []netip.Addr
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ok && ip.Unmap().Is4() == v4 && !ip.IsLinkLocalUnicast() {
				out = append(out, ip.Unmap())
			}
		}
		return out
	}
	one := func(a netip.Addr) func(bool) []netip.Addr { return func(bool) []netip.Addr { return []netip.Addr{a} } }
	s := baseSnapshot(plan)
	pod := plan.Pods[0]
	outside4, outside6 := plan.Outside[0], plan.Outside[4] // on the uplink subnet
	routed4, routed6 := plan.Outside[2], plan.Outside[6]   // routed through the uplink
	for _, tc := range []struct {
		name       string
		cfg        func(*config.Config)
		src4, src6 func(v4 bool) []netip.Addr // the sources the servers may see for the pod's flows
	}{
		{"no NAT", func(*config.Config) {}, one(pod.V4), one(pod.V6)},
		{"masquerade", func(c *config.Config) { c.Masquerade = true }, uplink, uplink},
		{"SNAT", func(c *config.Config) { c.SNATv4, c.SNATv6 = snat4, snat6 }, one(snat4), one(snat6)},
		{"SNAT v4, masquerade v6", func(c *config.Config) { c.Masquerade, c.SNATv4 = true, snat4 }, one(snat4), uplink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.ClusterInterfaces = []string{ClusterIf}
			tc.cfg(&cfg)
			fw.apply(t, s, cfg, 0)
			for _, dst := range []netip.Addr{outside4, routed4, outside6, routed6} {
				want := tc.src4(true)
				src := pod.V4
				if dst.Is6() {
					want, src = tc.src6(false), pod.V6
				}
				for _, proto := range []uint8{model.ProtoTCP, model.ProtoUDP} {
					p := Probe{Src: src, Dst: dst, Proto: proto, Port: 80}
					got, err := sourceSeen(topo, p)
					if err != nil {
						t.Errorf("%s: %v", p, err)
						continue
					}
					if !slices.Contains(want, got) {
						t.Errorf("%s: the server saw it from %v, want one of %v", p, got, want)
					}
				}
			}
			// Inbound connections keep their source: NAT applies to
			// traffic leaving the cluster only.
			for _, in := range []Probe{
				{Src: outside4, Dst: pod.V4, Proto: model.ProtoTCP, Port: 80},
				{Src: routed6, Dst: pod.V6, Proto: model.ProtoUDP, Port: 80},
			} {
				got, err := sourceSeen(topo, in)
				if err != nil {
					t.Errorf("%s: %v", in, err)
				} else if got != in.Src {
					t.Errorf("%s: the pod saw it from %v", in, got)
				}
			}
		})
	}
}

// sourceSeen makes one attempt of p and returns the source address its
// server recorded. A TCP server records a connection when it accepts it,
// which may be just after the client is done: it is waited for.
func sourceSeen(topo *Topology, p Probe) (netip.Addr, error) {
	sport, err := topo.AttemptFrom(context.Background(), p, recheckTimeout)
	if err != nil {
		return netip.Addr{}, err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := topo.SourcesSeen(p, sport)
		if len(got) == 1 {
			return got[0], nil
		}
		if len(got) > 1 || time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("source port %d: the server recorded first packets from %v", sport, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
