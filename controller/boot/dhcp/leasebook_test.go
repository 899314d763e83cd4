package dhcp

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/anvil-metal/anvil/controller/store/sqlstore"
)

func openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return st
}

// Two controllers (two servers, two server addresses) on one database
// lease from one book: the second offers a MAC the address the first
// offered, ACKs its renewal, gives other MACs other addresses, and the
// pool is exhausted for both together. A REQUEST that chose the first
// server, heard by the second, leaves the lease alone.
func TestReplicasShareTheLeaseBook(t *testing.T) {
	st := openStore(t)
	c1, c2 := fullConfig(), fullConfig()
	c2.ServerIP = netip.MustParseAddr("192.168.77.2")
	s1 := startServer(t, c1, WithLeases(st.LeaseBook(c1.PoolStart, c1.PoolEnd)))
	s2 := startServer(t, c2, WithLeases(st.LeaseBook(c2.PoolStart, c2.PoolEnd)))

	offer := exchange(t, s1.main, discover(t, mac1, pxeBIOS()...).ToBytes())
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER from the first server: %v", offer)
	}
	ip := offer.YourIPAddr
	if o2 := exchange(t, s2.main, discover(t, mac1, pxeBIOS()...).ToBytes()); o2 == nil || !o2.YourIPAddr.Equal(ip) {
		t.Fatalf("second server's OFFER to the same MAC: %v, want %v", o2, ip)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, pxeBIOS()...)
	if err != nil {
		t.Fatal(err)
	}
	// The broadcast REQUEST reaches the second server first.
	if r := exchange(t, s2.main, req.ToBytes()); r != nil {
		t.Errorf("second server answered a REQUEST for the first: %s", r.Summary())
	}
	if ack := exchange(t, s1.main, req.ToBytes()); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(ip) {
		t.Fatalf("first server after the second heard the REQUEST: %v, want ACK of %v", ack, ip)
	}
	// Renewing (RFC 2131 §4.3.2: ciaddr, no server identifier) through
	// the second server.
	renew, err := dhcpv4.New(dhcpv4.WithHwAddr(mac1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip))
	if err != nil {
		t.Fatal(err)
	}
	if ack := exchange(t, s2.main, renew.ToBytes()); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(ip) {
		t.Errorf("renewal through the second server: %v, want ACK of %v", ack, ip)
	}

	seen := map[string]bool{ip.String(): true}
	for i, srv := range []*testServer{s2, s1} {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0xbb, 0, byte(i)}
		o := exchange(t, srv.main, discover(t, mac).ToBytes())
		if o == nil {
			t.Fatalf("%v: no OFFER with free addresses left", mac)
		}
		if seen[o.YourIPAddr.String()] {
			t.Errorf("%v offered %v, already offered to another MAC", mac, o.YourIPAddr)
		}
		seen[o.YourIPAddr.String()] = true
	}
	// Three addresses, three MACs: a fourth gets no answer from either.
	for _, srv := range []*testServer{s1, s2} {
		if r := exchange(t, srv.main, discover(t, net.HardwareAddr{0x52, 0x54, 0, 0xbb, 0, 9}).ToBytes()); r != nil {
			t.Errorf("exhausted shared pool answered: %s", r.Summary())
		}
	}
}

// A book that fails (its database closed) leaves the client unanswered:
// no OFFER, no ACK, no NAK that would send it back to DISCOVER.
func TestFullModeWithoutItsDatabaseStaysSilent(t *testing.T) {
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "anvil.db"), sqlstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c := fullConfig()
	s := startServer(t, c, WithLeases(st.LeaseBook(c.PoolStart, c.PoolEnd)))
	offer := exchange(t, s.main, discover(t, mac1).ToBytes())
	if offer == nil {
		t.Fatal("no OFFER while the database is up")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if r := exchange(t, s.main, discover(t, mac1).ToBytes()); r != nil {
		t.Errorf("DISCOVER answered without a database: %s", r.Summary())
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	if r := exchange(t, s.main, req.ToBytes()); r != nil {
		t.Errorf("REQUEST answered without a database: %s", r.Summary())
	}
}

// The book must lease the configured pool; proxy mode leases nothing and
// takes any book.
func TestNewChecksTheBooksPool(t *testing.T) {
	st := openStore(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	other := st.LeaseBook(netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("10.1.0.20"))
	if _, err := New(fullConfig(), WithConn(pc, false), WithLeases(other)); err == nil {
		t.Error("full mode accepted a book for another pool")
	}
	if _, err := New(proxyConfig(), WithConn(pc, false), WithLeases(other)); err != nil {
		t.Errorf("proxy mode with a book: %v", err)
	}
}
