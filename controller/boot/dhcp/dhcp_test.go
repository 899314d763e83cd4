package dhcp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

const chainURL = "http://192.168.77.1:8080/ipxe/boot.ipxe"

func fullConfig() Config {
	c := Defaults()
	c.Mode = Full
	c.ServerIP = netip.MustParseAddr("192.168.77.1")
	c.ChainURL = chainURL
	c.PoolStart, c.PoolEnd = netip.MustParseAddr("192.168.77.100"), netip.MustParseAddr("192.168.77.102")
	c.Netmask = netip.MustParseAddr("255.255.255.0")
	c.Router = netip.MustParseAddr("192.168.77.1")
	c.DNS = []netip.Addr{netip.MustParseAddr("192.168.77.1")}
	return c
}

func proxyConfig() Config {
	c := Defaults()
	c.ServerIP = netip.MustParseAddr("192.168.77.1")
	c.ChainURL = chainURL
	return c
}

// testServer serves c on loopback sockets (port 67's and 4011's stand-ins)
// and returns a client socket for each.
type testServer struct {
	main, pxe *net.UDPConn
	srv       *Server
}

func startServer(t *testing.T, c Config, opts ...Option) *testServer {
	t.Helper()
	l67, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l4011, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(c, append([]Option{WithConn(l67, false), WithConn(l4011, true), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	dial := func(to net.Addr) *net.UDPConn {
		c, err := net.DialUDP("udp4", nil, to.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return &testServer{main: dial(l67.LocalAddr()), pxe: dial(l4011.LocalAddr()), srv: srv}
}

// exchange sends req and returns the reply, or nil after a short wait.
func exchange(t *testing.T, c *net.UDPConn, req []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	resp, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return resp
}

var mac1 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x01}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func pxeBIOS() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
	}
}

func TestFullModeLeaseAndBoot(t *testing.T) {
	s := startServer(t, fullConfig())
	offer := exchange(t, s.main, discover(t, mac1, pxeBIOS()...).ToBytes())
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER: %v", offer)
	}
	ip := offer.YourIPAddr
	if a, _ := netip.AddrFromSlice(ip.To4()); a.Less(netip.MustParseAddr("192.168.77.100")) || netip.MustParseAddr("192.168.77.102").Less(a) {
		t.Errorf("offered %v outside the pool", ip)
	}
	if offer.BootFileNameOption() != "undionly.kpxe" || !offer.ServerIPAddr.Equal(net.IPv4(192, 168, 77, 1)) ||
		offer.ClassIdentifier() != "PXEClient" || !offer.Router()[0].Equal(net.IPv4(192, 168, 77, 1)) ||
		offer.IPAddressLeaseTime(0) != time.Hour || net.IP(offer.SubnetMask()).String() != "255.255.255.0" ||
		offer.IPAddressRenewalTime(0) != 30*time.Minute || offer.IPAddressRebindingTime(0) != 52*time.Minute+30*time.Second {
		t.Errorf("OFFER for a BIOS PXE client: %s", offer.Summary())
	}

	req, err := dhcpv4.NewRequestFromOffer(offer, pxeBIOS()...)
	if err != nil {
		t.Fatal(err)
	}
	ack := exchange(t, s.main, req.ToBytes())
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(ip) {
		t.Fatalf("no ACK for %v: %v", ip, ack)
	}
	// The same MAC gets the same address again.
	if again := exchange(t, s.main, discover(t, mac1).ToBytes()); again == nil || !again.YourIPAddr.Equal(ip) {
		t.Errorf("second DISCOVER: %v, want %v", again, ip)
	}

	// iPXE itself gets the HTTP chain script, not TFTP.
	ipxe := exchange(t, s.main, discover(t, mac1, append(pxeBIOS(), dhcpv4.WithUserClass("iPXE", false))...).ToBytes())
	if ipxe == nil || ipxe.BootFileNameOption() != chainURL {
		t.Errorf("iPXE client: %v", ipxe)
	}
	// UEFI x86-64 PXE gets snponly.efi over TFTP from the next-server, with
	// no boot server discovery (no wait on port 4011).
	efi := exchange(t, s.main, discover(t, net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 2},
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))).ToBytes())
	if efi == nil || efi.BootFileNameOption() != "snponly.efi" || !efi.ServerIPAddr.Equal(net.IPv4(192, 168, 77, 1)) ||
		efi.TFTPServerName() != "192.168.77.1" || string(efi.Options.Get(dhcpv4.OptionVendorSpecificInformation)) != "\x06\x01\x08\xff" {
		t.Errorf("UEFI client: %v", efi)
	}
	// A plain DHCP client gets an address and no boot file.
	plain := exchange(t, s.main, discover(t, net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 3}).ToBytes())
	if plain == nil || plain.YourIPAddr.IsUnspecified() || plain.BootFileNameOption() != "" {
		t.Errorf("plain client: %v", plain)
	}
	// The pool has three addresses: a fourth client gets none.
	if full := exchange(t, s.main, discover(t, net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 4}).ToBytes()); full != nil {
		t.Errorf("exhausted pool answered: %s", full.Summary())
	}
}

// TestUEFIHTTPBoot: a UEFI HTTP Boot client (option 60 HTTPClient,
// architecture 16) gets iPXE's EFI image by URL and HTTPClient back; with
// no URL configured it gets an address and no boot file.
func TestUEFIHTTPBoot(t *testing.T) {
	http := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP))}
	c := fullConfig()
	c.EFIHTTPURL = "http://192.168.77.1:8080/files/snponly.efi"
	s := startServer(t, c)
	offer := exchange(t, s.main, discover(t, mac1, http...).ToBytes())
	if offer == nil || offer.YourIPAddr.IsUnspecified() || offer.BootFileNameOption() != c.EFIHTTPURL || offer.ClassIdentifier() != "HTTPClient" {
		t.Errorf("HTTP Boot client: %v", offer)
	}
	// Proxy mode answers it too, without an address.
	p := proxyConfig()
	p.EFIHTTPURL = c.EFIHTTPURL
	ps := startServer(t, p)
	if offer := exchange(t, ps.main, discover(t, mac1, http...).ToBytes()); offer == nil || !offer.YourIPAddr.IsUnspecified() ||
		offer.BootFileNameOption() != c.EFIHTTPURL || offer.ClassIdentifier() != "HTTPClient" {
		t.Errorf("proxy, HTTP Boot client: %v", offer)
	}
	// Without the URL: an address, no boot file; proxy mode stays silent.
	s = startServer(t, fullConfig())
	if offer := exchange(t, s.main, discover(t, mac1, http...).ToBytes()); offer == nil || offer.BootFileNameOption() != "" {
		t.Errorf("HTTP Boot client with no URL configured: %v", offer)
	}
	if r := exchange(t, startServer(t, proxyConfig()).main, discover(t, mac1, http...).ToBytes()); r != nil {
		t.Errorf("proxy answered an HTTP Boot client with no URL configured: %s", r.Summary())
	}
}

func TestFullModeRefusesAddressesItDidNotOffer(t *testing.T) {
	s := startServer(t, fullConfig())
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 168, 77, 1))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 168, 77, 200))))
	if err != nil {
		t.Fatal(err)
	}
	if nak := exchange(t, s.main, req.ToBytes()); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for an address never offered: %v, want NAK", nak)
	}
	// A REQUEST that chose another server is left alone.
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 9, 9)))
	if r := exchange(t, s.main, req.ToBytes()); r != nil {
		t.Errorf("REQUEST for another server answered: %s", r.Summary())
	}
}

func TestProxyModeAnswersOnlyPXEClientsWithBootInformation(t *testing.T) {
	s := startServer(t, proxyConfig())
	if r := exchange(t, s.main, discover(t, mac1).ToBytes()); r != nil {
		t.Errorf("proxy answered a plain DHCP client: %s", r.Summary())
	}
	offer := exchange(t, s.main, discover(t, mac1, pxeBIOS()...).ToBytes())
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.IsUnspecified() ||
		offer.BootFileNameOption() != "undionly.kpxe" || offer.ClassIdentifier() != "PXEClient" ||
		string(offer.Options.Get(dhcpv4.OptionVendorSpecificInformation)) != "\x06\x01\x08\xff" || offer.IPAddressLeaseTime(0) != 0 {
		t.Fatalf("proxy OFFER: %v", offer)
	}
	// Its REQUEST for the leasing server's address is not answered here:
	// a second ACK makes firmware decline the lease.
	req67, err := dhcpv4.NewRequestFromOffer(offer, pxeBIOS()...)
	if err != nil {
		t.Fatal(err)
	}
	req67.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 168, 77, 254)))
	if r := exchange(t, s.main, req67.ToBytes()); r != nil {
		t.Errorf("proxy answered a REQUEST on port 67: %s", r.Summary())
	}
	// The PXE client then asks the boot server on port 4011.
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(192, 168, 77, 50)), pxeBIOS()[0], pxeBIOS()[1])
	if err != nil {
		t.Fatal(err)
	}
	ack := exchange(t, s.pxe, req.ToBytes())
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileNameOption() != "undionly.kpxe" {
		t.Errorf("port 4011 ACK: %v", ack)
	}
}

func TestServerSurvivesMalformedPackets(t *testing.T) {
	s := startServer(t, proxyConfig())
	for _, junk := range [][]byte{nil, {1}, make([]byte, 100), []byte("not a dhcp packet at all, but long enough to look like one........................................................................................................................................................................................................................")} {
		if r := exchange(t, s.main, append(junk, 0)); r != nil {
			t.Errorf("junk answered: %s", r.Summary())
		}
	}
	if r := exchange(t, s.main, discover(t, mac1, pxeBIOS()...).ToBytes()); r == nil {
		t.Error("no answer after malformed packets")
	}
}

func TestLeasesReuseExpiredAddresses(t *testing.T) {
	ctx := t.Context()
	l := NewLeases(netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.10"))
	now := time.Unix(1000, 0)
	a, err := l.Offer(ctx, "m1", now, time.Minute)
	if err != nil || a != netip.MustParseAddr("10.0.0.10") {
		t.Fatalf("offer %v %v", a, err)
	}
	if _, err := l.Offer(ctx, "m2", now.Add(30*time.Second), time.Minute); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("second MAC on a full pool: %v", err)
	}
	if b, err := l.Offer(ctx, "m2", now.Add(2*time.Minute), time.Minute); err != nil || b != a {
		t.Errorf("expired lease not reused: %v %v", b, err)
	}
	if ok, err := l.Renew(ctx, "m1", a, now.Add(2*time.Minute), time.Hour); ok || err != nil {
		t.Errorf("m1 renewed the address it lost: %v %v", ok, err)
	}
	if ok, err := l.Renew(ctx, "m2", a, now.Add(2*time.Minute), time.Hour); !ok || err != nil {
		t.Errorf("m2 could not renew its lease: %v %v", ok, err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := fullConfig()
	bad.ServerIP = netip.MustParseAddr("192.168.77.101")
	bad.LeaseTime = time.Second
	bad.ChainURL = "tftp://x"
	if err := bad.Validate(); err == nil {
		t.Error("invalid config accepted")
	}
	if err := fullConfig().Validate(); err != nil {
		t.Error(err)
	}
}
