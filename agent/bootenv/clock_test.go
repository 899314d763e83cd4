package bootenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/pki"
)

// controllerTLS serves the controller's real TLS (its CA and serving
// certificate from controller/pki) on a loopback port until the test ends.
func controllerTLS(t *testing.T, hosts ...string) (addr string, ca *pki.CA, chain []*x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	ca, cfg, err := pki.EnsureServerTLS(dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, der := range cfg.Certificates[0].Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return l.Addr().String(), ca, chain
}

type fakeClock struct {
	now time.Time
	set []time.Time
}

func (c *fakeClock) opt() Option {
	return WithClock(func() time.Time { return c.now }, func(t time.Time) error { c.set = append(c.set, t); c.now = t; return nil })
}

func TestSeedClock(t *testing.T) {
	addr, ca, chain := controllerTLS(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	fp, err := pki.ParseFingerprint(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	floor := chain[0].NotBefore
	if ca.Certificate().NotBefore.After(floor) {
		floor = ca.Certificate().NotBefore
	}
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		cfg     ClockConfig
		now     time.Time
		want    time.Time
		stepped bool
		wantErr string
	}{
		{name: "fingerprint, clock in 2001", cfg: ClockConfig{Addrs: []string{addr}, Fingerprint: fp}, now: past, want: floor, stepped: true},
		{name: "CA file, clock in 2001", cfg: ClockConfig{Addrs: []string{addr}, Roots: roots}, now: past, want: floor, stepped: true},
		{name: "both", cfg: ClockConfig{Addrs: []string{addr}, Roots: roots, Fingerprint: fp}, now: past, want: floor, stepped: true},
		{name: "clock already right", cfg: ClockConfig{Addrs: []string{addr}, Fingerprint: fp}, now: floor.Add(time.Hour), want: floor.Add(time.Hour)},
		{name: "clock far ahead is left alone", cfg: ClockConfig{Addrs: []string{addr}, Fingerprint: fp}, now: floor.AddDate(30, 0, 0), want: floor.AddDate(30, 0, 0)},
		{name: "wrong fingerprint", cfg: ClockConfig{Addrs: []string{addr}, Fingerprint: make([]byte, 32)}, now: past, want: past, wantErr: "no certificate with fingerprint"},
		{name: "wrong CA", cfg: ClockConfig{Addrs: []string{addr}, Roots: x509.NewCertPool()}, now: past, want: past, wantErr: "verify against the CA"},
		{name: "name not in the certificate", cfg: ClockConfig{Addrs: []string{addr}, ServerName: "evil.example", Fingerprint: fp}, now: past, want: past, wantErr: "evil.example"},
		{name: "no trust", cfg: ClockConfig{Addrs: []string{addr}}, now: past, want: past, wantErr: "no CA certificate or fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{now: tc.now}
			step, err := SeedClock(context.Background(), tc.cfg, c.opt())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !c.now.Equal(tc.want) || step.Stepped != tc.stepped || (tc.stepped && len(c.set) != 1) {
				t.Errorf("clock %v (set %v, step %+v), want %v stepped=%v", c.now, c.set, step, tc.want, tc.stepped)
			}
			if tc.stepped {
				// The stepped clock is one at which the real client TLS
				// configuration accepts the controller.
				cfg, err := pki.ClientTLS(nil, ca.Fingerprint(), pki.WithServerName("127.0.0.1"))
				if err != nil {
					t.Fatal(err)
				}
				cfg.Time = func() time.Time { return c.now }
				conn, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					t.Fatalf("handshake at the seeded clock %v: %v", c.now, err)
				}
				conn.Close()
			}
		})
	}
}

func TestSeedClockUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := &fakeClock{now: time.Unix(0, 0)}
	if _, err := SeedClock(context.Background(), ClockConfig{Addrs: []string{addr}, Fingerprint: make([]byte, 32), Timeout: time.Second}, c.opt()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("err = %v, want one naming %s", err, addr)
	}
	if len(c.set) != 0 {
		t.Errorf("clock set to %v", c.set)
	}
}

// With several controller replicas, the clock is seeded from the first
// that answers with a chain that verifies: a dead replica and one whose
// certificate is from another CA are passed over; when none answers, the
// error names each.
func TestSeedClockTriesEachReplica(t *testing.T) {
	addr, ca, chain := controllerTLS(t)
	foreign, _, _ := controllerTLS(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	fp, err := pki.ParseFingerprint(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	floor := chain[0].NotBefore
	if ca.Certificate().NotBefore.After(floor) {
		floor = ca.Certificate().NotBefore
	}
	c := &fakeClock{now: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)}
	step, err := SeedClock(context.Background(), ClockConfig{Addrs: []string{dead, foreign, addr}, Fingerprint: fp, Timeout: time.Second}, c.opt())
	if err != nil || !step.Stepped || !c.now.Equal(floor) {
		t.Fatalf("SeedClock over a dead, a foreign and a good replica: %+v, %v; clock %v, want %v", step, err, c.now, floor)
	}
	c = &fakeClock{now: time.Unix(0, 0)}
	_, err = SeedClock(context.Background(), ClockConfig{Addrs: []string{dead, foreign}, Fingerprint: fp, Timeout: time.Second}, c.opt())
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), foreign) || len(c.set) != 0 {
		t.Errorf("no replica answers: err %v (want one naming %s and %s), clock set %v", err, dead, foreign, c.set)
	}
	if _, err := SeedClock(context.Background(), ClockConfig{Fingerprint: fp}, c.opt()); err == nil {
		t.Error("SeedClock without an address succeeded")
	}
}
