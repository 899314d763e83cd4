package bootenv

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/anvil-metal/anvil/controller/boot/dhcp"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// syncBuffer is a log sink the test reads while keepLease writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeepLease renews a real lease from anvil's own DHCP server (full
// mode, 10 s leases) over a veth pair in a namespace of the test's own:
// renewals at T1 keep it; after the server restarts with an empty lease
// book it refuses the renewal, and the agent gets a new lease, the same
// address again (the server prefers each MAC's own).
func TestKeepLease(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "lease")
	for _, args := range [][]string{
		{"link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c"},
		{"addr", "add", "10.77.0.1/24", "dev", "veth-s"},
		{"link", "set", "veth-s", "up"},
		{"link", "set", "veth-c", "up"},
	} {
		netnstest.Run(t, "", "ip", append([]string{"-n", ns.Name}, args...)...)
	}
	cfg := dhcp.Defaults()
	cfg.Mode, cfg.ServerIP, cfg.ChainURL = dhcp.Full, netip.MustParseAddr("10.77.0.1"), "http://10.77.0.1/ipxe/boot.ipxe"
	cfg.PoolStart, cfg.PoolEnd, cfg.Netmask = netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.110"), netip.MustParseAddr("255.255.255.0")
	cfg.LeaseTime = 10 * time.Second
	serve := func() func() {
		var srv *dhcp.Server
		ns.Do(t, func() {
			opts, err := dhcp.Listen("veth-s", dhcp.Full)
			if err != nil {
				t.Fatal(err)
			}
			if srv, err = dhcp.New(cfg, append(opts, dhcp.WithLogger(slog.New(slog.DiscardHandler)))...); err != nil {
				t.Fatal(err)
			}
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("DHCP server: %v", err)
			}
		}
	}
	stop := serve()
	defer func() { stop() }()

	var c *nclient4.Client
	ns.Do(t, func() {
		var err error
		if c, err = nclient4.New("veth-c", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3)); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := c.Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr := lease.ACK.YourIPAddr.String()
	netnstest.Run(t, "", "ip", "-n", ns.Name, "addr", "add", addr+"/24", "dev", "veth-c")

	var logs syncBuffer
	kctx, kcancel := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		keepLease(kctx, c, Lease{Interface: "veth-c", ack: lease.ACK, got: lease.CreationTime}, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	defer func() {
		kcancel()
		<-kept
	}()
	waitFor := func(what string, n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for strings.Count(logs.String(), what) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no %d× %q within %v; log:\n%s", n, what, within, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// T1 is 5 s: two renewals within 12 s, past the first lease's end.
	waitFor(`msg="DHCP lease renewed" address=`+addr, 2, 12*time.Second)

	stop()
	stop = serve()
	waitFor(`msg="DHCP server refused the renewal`, 1, 8*time.Second)
	waitFor(`msg="DHCP: new lease" address=`+addr+` was=`+addr, 1, 8*time.Second)
	waitFor(`msg="DHCP lease renewed"`, 3, 8*time.Second)
}

func TestLeaseTimes(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lt := TimesOf(at, time.Hour, 0, 0)
	if lt.Renew != at.Add(30*time.Minute) || lt.Rebind != at.Add(52*time.Minute+30*time.Second) || lt.Expire != at.Add(time.Hour) {
		t.Errorf("defaults %+v", lt)
	}
	if lt := TimesOf(at, time.Hour, 10*time.Minute, 20*time.Minute); lt.Renew != at.Add(10*time.Minute) || lt.Rebind != at.Add(20*time.Minute) {
		t.Errorf("server's times %+v", lt)
	}
	// Times out of order are the server's mistake: the defaults instead.
	if lt := TimesOf(at, time.Hour, 2*time.Hour, time.Minute); lt.Renew != at.Add(30*time.Minute) || lt.Rebind != at.Add(52*time.Minute+30*time.Second) {
		t.Errorf("bad server times %+v", lt)
	}
	if lt := TimesOf(at, 0, 0, 0); !lt.Renew.IsZero() {
		t.Errorf("infinite lease %+v", lt)
	}
	for _, c := range []struct {
		now  time.Time
		want time.Duration
	}{
		{at.Add(31 * time.Minute), time.Minute},                    // 21.5 min to T2: capped
		{at.Add(52 * time.Minute), 15 * time.Second},               // 30 s to T2
		{at.Add(53 * time.Minute), time.Minute},                    // rebinding: 7 min to expiry
		{at.Add(59*time.Minute + 55*time.Second), 5 * time.Second}, // floor
	} {
		if got := lt.RetryIn(c.now); got != c.want {
			t.Errorf("RetryIn(%v) = %v, want %v", c.now.Sub(at), got, c.want)
		}
	}
}
