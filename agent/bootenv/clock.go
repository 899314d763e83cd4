package bootenv

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// ClockConfig says how to reach the controller and how to authenticate its
// certificate chain; the same trust as the agent's TLS (a CA bundle, a CA
// fingerprint, or both).
type ClockConfig struct {
	// Addrs are the controller replicas' host:port, tried in turn until one
	// presents a chain that verifies.
	Addrs []string
	// ServerName is the name (DNS name or IP address) every serving
	// certificate must be valid for; when empty, each address's own host.
	ServerName string
	// Roots are trusted CA certificates (nil: none).
	Roots *x509.CertPool
	// Fingerprint is the SHA-256 of a trusted certificate in the presented
	// chain (nil: none).
	Fingerprint []byte
	// Timeout bounds the connection and the handshake with one address
	// (default 10 s).
	Timeout time.Duration
}

// ClockStep reports what SeedClock did.
type ClockStep struct {
	// Before is the clock when it was read; After what it was set to
	// (equal to Before when it was left alone).
	Before, After time.Time
	// Stepped is true when the clock was set.
	Stepped bool
}

// SeedClock makes the system clock plausible for TLS. A machine whose
// RTC is unset or flat boots with a clock years in the past, so every
// certificate looks "not yet valid" (RFC 5280 4.1.2.5) and the agent can
// never reach the controller. SeedClock connects to a controller (the
// first of Addrs that answers with a chain that verifies), checks
// the presented chain against the trust anchor ignoring validity times
// (the signatures and the host name, not the clock, prove it is the
// controller), and steps the clock forward to the latest NotBefore in the
// chain when the clock is earlier. A clock that is already later is never
// moved: this is a lower bound, not a time service.
func SeedClock(ctx context.Context, cfg ClockConfig, opts ...Option) (ClockStep, error) {
	o := newOptions(opts)
	if len(cfg.Addrs) == 0 {
		return ClockStep{}, errors.New("seed clock: no controller address")
	}
	var floor time.Time
	var errs []error
	for _, addr := range cfg.Addrs {
		f, err := chainFloor(ctx, cfg, addr)
		if err == nil {
			floor, errs = f, nil
			break
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) > 0 {
		return ClockStep{}, errors.Join(errs...)
	}
	now := o.now()
	step := ClockStep{Before: now, After: now}
	if !now.Before(floor) {
		return step, nil
	}
	if err := o.setClock(floor); err != nil {
		return step, fmt.Errorf("step the clock from %s to the controller certificate's %s: %w",
			now.UTC().Format(time.RFC3339), floor.UTC().Format(time.RFC3339), err)
	}
	step.After, step.Stepped = floor, true
	o.log.Warn("clock was behind the controller's certificate; stepped forward", "from", now.UTC(), "to", floor.UTC())
	return step, nil
}

// chainFloor fetches the chain of the controller at addr and returns its
// verified lower time bound.
func chainFloor(ctx context.Context, cfg ClockConfig, addr string) (time.Time, error) {
	if cfg.Roots == nil && cfg.Fingerprint == nil {
		return time.Time{}, errors.New("seed clock: no CA certificate or fingerprint to verify the controller with")
	}
	name := cfg.ServerName
	if name == "" {
		h, _, err := net.SplitHostPort(addr)
		if err != nil {
			return time.Time{}, fmt.Errorf("seed clock: controller address %q: %w", addr, err)
		}
		name = h
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var chain []*x509.Certificate
	d := tls.Dialer{Config: &tls.Config{
		// The standard verification checks validity against the clock
		// this function exists to fix; the chain is verified below,
		// before anything is trusted, and nothing is sent over it.
		InsecureSkipVerify: true,
		ServerName:         name,
		NextProtos:         []string{"h2"},
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			chain = cs.PeerCertificates
			return nil
		},
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("seed clock: TLS handshake with %s: %w", addr, err)
	}
	if err := conn.Close(); err != nil {
		return time.Time{}, fmt.Errorf("seed clock: close connection to %s: %w", addr, err)
	}
	floor, err := verifiedFloor(chain, name, cfg.Roots, cfg.Fingerprint)
	if err != nil {
		return time.Time{}, fmt.Errorf("seed clock: certificate of %s: %w", addr, err)
	}
	return floor, nil
}

// verifiedFloor verifies chain (leaf first, as presented) for name against
// roots and/or the certificate with the given SHA-256, at a time when all
// of the chain is valid, and returns the latest NotBefore in the verified
// path: the earliest time at which the chain verifies.
func verifiedFloor(chain []*x509.Certificate, name string, roots *x509.CertPool, fingerprint []byte) (time.Time, error) {
	if len(chain) == 0 {
		return time.Time{}, errors.New("no certificate presented")
	}
	leaf := chain[0]
	// Verify at the latest NotBefore of the presented chain: if the chain
	// is valid at all, it is valid then.
	at := leaf.NotBefore
	for _, c := range chain {
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	inter := x509.NewCertPool()
	pinned := x509.NewCertPool()
	havePin := false
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if fingerprint != nil {
		for _, c := range chain {
			sum := sha256.Sum256(c.Raw)
			if subtle.ConstantTimeCompare(sum[:], fingerprint) == 1 {
				pinned.AddCert(c)
				havePin = true
			}
		}
		if !havePin {
			return time.Time{}, fmt.Errorf("chain has no certificate with fingerprint sha256:%x", fingerprint)
		}
	}
	verify := func(pool *x509.CertPool) ([][]*x509.Certificate, error) {
		return leaf.Verify(x509.VerifyOptions{
			DNSName: name, Roots: pool, Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
	}
	var paths [][]*x509.Certificate
	if roots != nil {
		p, err := verify(roots)
		if err != nil {
			return time.Time{}, fmt.Errorf("verify against the CA certificates: %w", err)
		}
		paths = p
	}
	if havePin {
		p, err := verify(pinned)
		if err != nil {
			return time.Time{}, fmt.Errorf("verify against the pinned CA: %w", err)
		}
		paths = p
	}
	var floor time.Time
	for _, c := range paths[0] {
		if c.NotBefore.After(floor) {
			floor = c.NotBefore
		}
	}
	return floor, nil
}
