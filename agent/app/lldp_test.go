package app

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/bootparams"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/netnstest"
	"golang.org/x/sys/unix"
)

// lldpFrame is an LLDPDU from switch "leaf-1" port "Ethernet7" (IEEE
// 802.1AB-2016: Chassis ID local "leaf-1", Port ID interface name
// "Ethernet7", TTL 120, System Name "leaf-1", Port VLAN ID 10, End).
var lldpFrame = []byte{
	0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xcc, // Ethernet header
	0x02, 0x07, 0x07, 'l', 'e', 'a', 'f', '-', '1', // Chassis ID: type 1, length 7, subtype 7 (local)
	0x04, 0x0a, 0x05, 'E', 't', 'h', 'e', 'r', 'n', 'e', 't', '7', // Port ID: type 2, length 10, subtype 5 (interface name)
	0x06, 0x02, 0x00, 0x78, // TTL: type 3, length 2, 120 s
	0x0a, 0x06, 'l', 'e', 'a', 'f', '-', '1', // System Name: type 5, length 6
	0xfe, 0x06, 0x00, 0x80, 0xc2, 0x01, 0x00, 0x0a, // IEEE 802.1 Port VLAN ID 10
	0x00, 0x00, // End
}

// TestInventoryLLDP: the first inventory waits for LLDP at most the
// configured time and later ones do not wait; NICs get the neighbours
// heard on them by name, on real AF_PACKET sockets in a test namespace.
func TestInventoryLLDP(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "applldp")
	ns.Veth(t, [2]string{"eth0", "sw0"}, [2]string{"eth1", "sw1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nb := newNeighbors(400*time.Millisecond, slog.New(slog.DiscardHandler))
	ns.Do(t, func() { nb.listen(ctx, []string{"eth0", "eth1"}) })
	if got := nb.c.Interfaces(); strings.Join(got, ",") != "eth0,eth1" {
		t.Fatalf("listening on %v", got)
	}

	inventory := func() (*anvilv1.Inventory, time.Duration) {
		inv := &anvilv1.Inventory{Nics: []*anvilv1.NIC{{Name: "eth0"}, {Name: "eth1"}, {Name: "lo"}}}
		start := time.Now()
		nb.fill(ctx, inv)
		return inv, time.Since(start)
	}
	// Nothing sent: the first inventory waits the maximum.
	inv, took := inventory()
	if took < 400*time.Millisecond || took > time.Second {
		t.Errorf("first inventory took %v, want the 400ms maximum", took)
	}
	for _, nic := range inv.Nics {
		if len(nic.LldpNeighbors) != 0 {
			t.Errorf("%s: %v before any frame", nic.Name, nic.LldpNeighbors)
		}
	}

	ns.Do(t, func() {
		ifi, err := net.InterfaceByName("sw0")
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, lldpFrame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}); err != nil {
			t.Fatal(err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		inv, took = inventory()
		if took > 100*time.Millisecond {
			t.Fatalf("a later inventory waited %v", took)
		}
		if len(inv.Nics[0].LldpNeighbors) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := inv.Nics[0].LldpNeighbors
	if len(n) != 1 || n[0].SystemName != "leaf-1" || n[0].PortId != "Ethernet7" || n[0].ChassisId != "leaf-1" || n[0].Vlan != 10 {
		t.Errorf("eth0 neighbours %v", n)
	}
	if len(inv.Nics[1].LldpNeighbors) != 0 || len(inv.Nics[2].LldpNeighbors) != 0 {
		t.Errorf("eth1 %v, lo %v: want none", inv.Nics[1].LldpNeighbors, inv.Nics[2].LldpNeighbors)
	}
}

func TestLLDPOff(t *testing.T) {
	if nb := newNeighbors(0, slog.New(slog.DiscardHandler)); nb != nil {
		t.Fatal("a zero wait still listens")
	}
	var nb *neighbors
	nb.listen(context.Background(), []string{"eth0"})
	inv := &anvilv1.Inventory{Nics: []*anvilv1.NIC{{Name: "eth0"}}}
	nb.fill(context.Background(), inv)
	if len(inv.Nics[0].LldpNeighbors) != 0 {
		t.Error("LLDP off filled neighbours")
	}
}

// TestLLDPWaitConfig: --lldp-wait beats anvil.lldp_wait=, which beats the
// default; a negative wait is refused.
func TestLLDPWaitConfig(t *testing.T) {
	d := func(v time.Duration) *time.Duration { return &v }
	if got := (Config{}).FromCmdline(bootparams.Params{}).lldpWait(); got != DefaultLLDPWait {
		t.Errorf("default %v", got)
	}
	if got := (Config{}).FromCmdline(bootparams.Params{LLDPWait: d(0)}).lldpWait(); got != 0 {
		t.Errorf("anvil.lldp_wait=0: %v", got)
	}
	if got := (Config{LLDPWait: d(time.Second)}).FromCmdline(bootparams.Params{LLDPWait: d(0)}).lldpWait(); got != time.Second {
		t.Errorf("flag 1s, kernel 0: %v", got)
	}
	c := Config{Mode: ModeBoot, Controller: "x:1", BootToken: "t", CAFingerprint: "sha256:00", LLDPWait: d(-time.Second)}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "LLDP wait -1s is negative") {
		t.Errorf("Validate = %v", err)
	}
}
