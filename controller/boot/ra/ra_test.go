package ra

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/anvil-metal/anvil/test/netnstest"
)

func TestAdvertise(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}
	got := Advertise(mac)
	want := []byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 1, 2, 3}
	if string(got) != string(want) {
		t.Errorf("advertisement % x, want % x", got, want)
	}
	// Parsed by x/net as RFC 4861 says: lifetime 0, no flags.
	m, err := icmp.ParseMessage(58, got)
	if err != nil || m.Type != ipv6.ICMPTypeRouterAdvertisement {
		t.Errorf("parse: %v %v", m, err)
	}
	for _, c := range []struct {
		msg  []byte
		want bool
	}{{[]byte{133, 0, 0, 0, 0, 0, 0, 0}, true}, {[]byte{133, 1, 0, 0, 0, 0, 0, 0}, false}, {[]byte{133, 0, 0}, false}, {[]byte{134, 0, 0, 0, 0, 0, 0, 0}, false}} {
		if IsSolicitation(c.msg) != c.want {
			t.Errorf("IsSolicitation(% x) = %v", c.msg, !c.want)
		}
	}
}

// TestResponder: a solicitation sent over a veth pair in a namespace of
// the test's own gets the advertisement, with hop limit 255, within a
// second; one from another interface does not.
func TestResponder(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "ra")
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "add", "ra-s", "type", "veth", "peer", "name", "ra-c")
	// The kernel's own solicitations would be answered too: only the
	// test's may be.
	netnstest.Run(t, "", "ip", "netns", "exec", ns.Name, "sysctl", "-qw", "net.ipv6.conf.ra-c.router_solicitations=0")
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "ra-s", "up")
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "ra-c", "up")
	// Link-local addresses must finish duplicate address detection: a
	// tentative one can neither send nor receive.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := netnstest.Run(t, "", "ip", "-n", ns.Name, "-6", "addr", "show")
		if strings.Count(out, "scope link") >= 2 && !strings.Contains(out, "tentative") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link-local addresses not ready:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var r *Responder
	var client *ipv6.PacketConn
	var ci *net.Interface
	ns.Do(t, func() {
		var err error
		if r, err = Listen("ra-s", slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			t.Fatal(err)
		}
		client = c.IPv6PacketConn()
		if ci, err = net.InterfaceByName("ra-c"); err != nil {
			t.Fatal(err)
		}
	})
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := client.SetICMPFilter(&f); err != nil {
		t.Fatal(err)
	}
	if err := client.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true); err != nil {
		t.Fatal(err)
	}
	rs := []byte{133, 0, 0, 0, 0, 0, 0, 0}
	if _, err := client.WriteTo(rs, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ci.Index}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "ra-c"}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	if err := client.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n, cm, _, err := client.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no router advertisement: %v", err)
	}
	if cm.IfIndex != ci.Index || cm.HopLimit != 255 || buf[0] != 134 || buf[6] != 0 || buf[7] != 0 || buf[5] != 0 || n < 16 {
		t.Errorf("advertisement % x hop limit %d", buf[:n], cm.HopLimit)
	}
	// A solicitation with a hop limit below 255 crossed a router: ignored.
	time.Sleep(150 * time.Millisecond)
	if _, err := client.WriteTo(rs, &ipv6.ControlMessage{HopLimit: 64, IfIndex: ci.Index}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "ra-c"}); err != nil {
		t.Fatal(err)
	}
	if err := client.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, _, _, err := client.ReadFrom(buf); err == nil {
		t.Errorf("answered a solicitation with hop limit 64: % x", buf[:n])
	}
}
