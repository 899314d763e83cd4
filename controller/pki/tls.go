package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrNoTrust is returned by ClientTLS when given neither a CA nor a
// fingerprint: anvil never talks to an unauthenticated server.
var ErrNoTrust = errors.New("no CA certificate or CA fingerprint given")

// LoadServerTLS returns a server configuration (TLS 1.2 or later) serving
// the certificate chain in certFile with the key in keyFile.
func LoadServerTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate %s: %w", certFile, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}, nil
}

// ClientTLS returns a client configuration (TLS 1.2 or later) that trusts
// the CA certificates in caPEM. When caPEM is empty, it instead accepts a
// server whose presented chain contains a certificate with the given
// fingerprint ("sha256:<hex>", as returned by Fingerprint; hex may be
// upper-case or colon-separated) and whose leaf verifies against that
// certificate for the dialled server name. When both are given, the server
// must satisfy both. With neither, it returns ErrNoTrust.
//
// crypto/tls does not tell the verification callback the dialled name when
// it is an IP address (no SNI is sent for IPs), so a fingerprint-only client
// that dials an IP must name it with WithServerName; without a name the
// handshake fails rather than skipping the host check.
func ClientTLS(caPEM []byte, fingerprint string, opts ...ClientOption) (*tls.Config, error) {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	var want []byte
	if fingerprint != "" {
		var err error
		if want, err = ParseFingerprint(fingerprint); err != nil {
			return nil, err
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.serverName}
	switch {
	case len(caPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("CA PEM holds no certificate")
		}
		cfg.RootCAs = pool
		if want != nil {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				for _, chain := range cs.VerifiedChains {
					for _, c := range chain {
						if fingerprintMatches(c.Raw, want) {
							return nil
						}
					}
				}
				return fmt.Errorf("server chain does not contain the CA with fingerprint %s", fingerprint)
			}
		}
	case want != nil:
		// The standard verification cannot be used without roots, so it is
		// switched off and replaced by an equivalent one whose root is the
		// presented certificate that carries the pinned fingerprint.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.ServerName == "" {
				cs.ServerName = o.serverName
			}
			return verifyPinned(cs, want)
		}
	default:
		return nil, ErrNoTrust
	}
	return cfg, nil
}

// ClientOption configures ClientTLS.
type ClientOption func(*clientOptions)

type clientOptions struct {
	serverName string
}

// WithServerName sets the name (DNS name or IP address) the server
// certificate must be valid for, and the configuration's ServerName.
func WithServerName(name string) ClientOption {
	return func(o *clientOptions) { o.serverName = name }
}

// verifyPinned verifies the presented leaf for cs.ServerName against the
// presented certificate whose SHA-256 is want.
func verifyPinned(cs tls.ConnectionState, want []byte) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server presented no certificate")
	}
	if cs.ServerName == "" {
		return errors.New("no server name to verify the certificate for (dialling an IP address needs pki.WithServerName)")
	}
	roots := x509.NewCertPool()
	intermediates := x509.NewCertPool()
	pinned := false
	for _, c := range cs.PeerCertificates {
		if fingerprintMatches(c.Raw, want) {
			roots.AddCert(c)
			pinned = true
		} else {
			intermediates.AddCert(c)
		}
	}
	if !pinned {
		return fmt.Errorf("server chain has no certificate with fingerprint sha256:%x", want)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify server certificate against pinned CA: %w", err)
	}
	return nil
}

func fingerprintMatches(der, want []byte) bool {
	sum := sha256.Sum256(der)
	return subtle.ConstantTimeCompare(sum[:], want) == 1
}

// ParseFingerprint parses "sha256:<64 hex digits>" (the "sha256:" prefix is
// optional, hex may be upper-case and colon-separated) into the digest.
func ParseFingerprint(s string) ([]byte, error) {
	h := strings.TrimSpace(s)
	if algo, rest, ok := strings.Cut(h, ":"); ok && strings.EqualFold(algo, "sha256") {
		h = rest
	}
	h = strings.ReplaceAll(h, ":", "")
	digest, err := hex.DecodeString(h)
	if err != nil || len(digest) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", s)
	}
	return digest, nil
}

// EnsureServerTLS is EnsureCA, EnsureServingCert and LoadServerTLS in one:
// the controller's own TLS from its data dir.
func EnsureServerTLS(dir string, hosts []string) (*CA, *tls.Config, error) {
	ca, err := EnsureCA(dir)
	if err != nil {
		return nil, nil, err
	}
	certFile, keyFile, err := ca.EnsureServingCert(dir, hosts)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := LoadServerTLS(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	return ca, cfg, nil
}
