package lldp

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/netnstest"
	"golang.org/x/sys/unix"
)

// vethNS is a fresh namespace with veth pairs va–vb and vc–vd, all up.
func vethNS(t *testing.T) netnstest.NS {
	t.Helper()
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "lldp")
	ns.Veth(t, [2]string{"va", "vb"}, [2]string{"vc", "vd"})
	return ns
}

// send writes raw Ethernet frames out of iface in ns through an AF_PACKET
// socket of its own.
func send(t *testing.T, ns netnstest.NS, iface string, frames ...[]byte) {
	t.Helper()
	ns.Do(t, func() {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}); err != nil {
				t.Fatalf("send on %s: %v", iface, err)
			}
		}
	})
}

// listen starts a collector on ifaces inside ns until the test ends.
func listen(t *testing.T, ns netnstest.NS, ifaces ...string) *Collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := New(WithGrace(200 * time.Millisecond))
	ns.Do(t, func() {
		if err := c.Listen(ctx, ifaces...); err != nil {
			t.Fatal(err)
		}
	})
	return c
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListenVeth: hand-built frames sent from the peer end of a veth pair
// reach the collector on the right interface, tagged or not; other
// EtherTypes and the other pair's frames do not.
func TestListenVeth(t *testing.T) {
	ns := vethNS(t)
	c := listen(t, ns, "va", "vc")

	// The socket joined the nearest-bridge group on each interface.
	for _, dev := range []string{"va", "vc"} {
		if out := netnstest.Run(t, "", "ip", "-n", ns.Name, "maddr", "show", "dev", dev); !strings.Contains(out, "01:80:c2:00:00:0e") {
			t.Errorf("%s has not joined 01:80:c2:00:00:0e:\n%s", dev, out)
		}
	}
	// Listening twice on one interface keeps one socket.
	ns.Do(t, func() {
		if err := c.Listen(context.Background(), "va"); err != nil {
			t.Fatal(err)
		}
	})
	// A missing interface is an error naming it.
	ns.Do(t, func() {
		if err := c.Listen(context.Background(), "nosuch0"); err == nil || !strings.Contains(err.Error(), "listen for LLDP on nosuch0: SIOCGIFINDEX") {
			t.Errorf("Listen(nosuch0) = %v", err)
		}
	})

	ipv4 := concat(ethHeader[:12], []byte{0x08, 0x00}, minimal)
	tagged := concat(ethHeader[:12], []byte{0x81, 0x00, 0x00, 0x64, 0x88, 0xcc}, fullPDU)
	send(t, ns, "vb", ipv4, tagged)
	eventually(t, "neighbour on va", func() bool { return len(c.Neighbors("va")) == 1 })
	if got := c.Neighbors("va"); !equal(got, []*anvilv1.LLDPNeighbor{fullWant}) {
		t.Errorf("va: %v, want %v", got, fullWant)
	}
	if got := c.Neighbors("vc"); len(got) != 0 {
		t.Errorf("vc heard va's neighbour: %v", got)
	}

	// vc has not heard: Wait ends at first frame + grace, not at max.
	start := time.Now()
	if err := c.Wait(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Wait took %v; the grace is 200ms", d)
	}

	send(t, ns, "vd", concat(ethHeader, minimal))
	eventually(t, "neighbour on vc", func() bool { return len(c.Neighbors("vc")) == 1 })
	if got := c.Neighbors("vc")[0]; got.ChassisId != "sw1" || got.PortId != "p1" {
		t.Errorf("vc: %v", got)
	}
	if got := c.Neighbors("va"); len(got) != 1 {
		t.Errorf("va after vc's frame: %v", got)
	}
}

// TestListenStopsWithContext: the sockets close when the context ends.
func TestListenStopsWithContext(t *testing.T) {
	ns := vethNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	c := New()
	ns.Do(t, func() {
		if err := c.Listen(ctx, "va"); err != nil {
			t.Fatal(err)
		}
	})
	cancel()
	eventually(t, "group membership dropped with the socket", func() bool {
		return !strings.Contains(netnstest.Run(t, "", "ip", "-n", ns.Name, "maddr", "show", "dev", "va"), "01:80:c2:00:00:0e")
	})
	send(t, ns, "vb", concat(ethHeader, minimal))
	time.Sleep(100 * time.Millisecond)
	if got := c.Neighbors("va"); len(got) != 0 {
		t.Errorf("heard after the context ended: %v", got)
	}
}

// TestListenLLDPD: Debian's lldpd on the peer end of a veth pair is heard
// with its system name and port ID.
func TestListenLLDPD(t *testing.T) {
	ns := vethNS(t)
	lldpd, err := exec.LookPath("lldpd")
	if err != nil {
		t.Fatalf("lldpd (Debian package lldpd, hack/install-deps.sh): %v", err)
	}
	c := listen(t, ns, "va")

	// lldpd's unprivileged half and its lldpcli reach the control
	// socket in this directory.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "lldpd.conf")
	if err := os.WriteFile(conf, []byte("configure system hostname anvil-test-switch\n"+
		"configure lldp portidsubtype ifname\n"+
		"configure lldp tx-interval 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "", "ip", "-n", ns.Name, "addr", "add", "192.0.2.7/24", "dev", "vb")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, lldpd, "-d", "-u", filepath.Join(dir, "ctl"), "-p", filepath.Join(dir, "pid"),
		"-I", "vb", "-m", "192.0.2.7", "-O", conf)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck // it may have exited; Wait says
		cmd.Wait()         //nolint:errcheck // killed
	})

	start := time.Now()
	if err := c.Wait(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := c.Neighbors("va")
	if len(got) != 1 {
		t.Fatalf("after %v: neighbours %v; lldpd:\n%s", time.Since(start), got, out.String())
	}
	n := got[0]
	// lldpd's chassis ID is the first MAC address among the interfaces.
	links := netnstest.Run(t, "", "ip", "-n", ns.Name, "-br", "link", "show")
	if n.SystemName != "anvil-test-switch" || n.PortId != "vb" || n.PortIdSubtype != "interface-name" ||
		n.ChassisIdSubtype != "mac" || len(n.ChassisId) != 17 || !strings.Contains(links, n.ChassisId) ||
		len(n.ManagementAddresses) != 1 || n.ManagementAddresses[0] != "192.0.2.7" || n.TtlSeconds == 0 {
		t.Errorf("neighbour %v (links:\n%s)", n, links)
	}
	t.Logf("lldpd heard after %v", time.Since(start).Round(time.Millisecond))
}

// TestListenBeforeLinkUp: the agent listens before it brings its links
// up; the kernel then reports "network is down" once on the socket, and
// the listener must go on and hear the frames once the link is up.
func TestListenBeforeLinkUp(t *testing.T) {
	ns := vethNS(t)
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "va", "down")
	c := listen(t, ns, "va")
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "va", "up")
	// A link going down and up again while listening changes nothing.
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "va", "down")
	netnstest.Run(t, "", "ip", "-n", ns.Name, "link", "set", "va", "up")
	time.Sleep(100 * time.Millisecond)
	send(t, ns, "vb", concat(ethHeader, minimal))
	eventually(t, "neighbour on va after it came up", func() bool { return len(c.Neighbors("va")) == 1 })
}
