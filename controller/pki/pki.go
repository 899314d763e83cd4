// Package pki is anvil's small private PKI: the controller's own ECDSA P-256
// certificate authority (RFC 5280 certificates), the serving certificate it
// signs for the controller's gRPC and HTTPS endpoints, TLS configurations for
// servers and for clients that trust the CA either by its PEM or only by its
// SHA-256 fingerprint (the form agents receive on the kernel command line),
// the random bearer tokens operators and agents authenticate with, and the
// gRPC per-call credentials (Bearer) that send such a token to the controller.
//
// Every secret is written with mode 0600 to a synced temporary file that is
// then renamed (or, for token files, hard-linked) into place, so a crash
// never leaves a half-written key or token behind.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the directories given to EnsureCA and EnsureServingCert.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Lifetimes of generated certificates.
const (
	CAValidity      = 10 * 365 * 24 * time.Hour
	ServingValidity = 365 * 24 * time.Hour
	// RenewBefore is how long before expiry a serving certificate is
	// replaced by EnsureServingCert.
	RenewBefore = 30 * 24 * time.Hour
)

// CA is a loaded certificate authority: its certificate and private key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// EnsureCA loads the CA from dir/ca.crt and dir/ca.key, or creates a new
// self-signed ECDSA P-256 CA valid for ten years when dir holds no ca.crt.
// dir is created with mode 0700 if missing; the key is written with 0600.
// A ca.crt without its ca.key is an error, never silently replaced: agents
// may have pinned its fingerprint.
func EnsureCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		return loadCA(certPath, certPEM, keyPath)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA directory: %w", err)
	}
	ca, keyPEM, err := newCA(time.Now())
	if err != nil {
		return nil, err
	}
	// The key goes first: a crash between the two writes leaves a key
	// without a certificate, which the next call simply replaces.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, ca.certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return ca, nil
}

func loadCA(certPath string, certPEM []byte, keyPath string) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s: not a CA certificate", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match certificate %s", keyPath, certPath)
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

func newCA(now time.Time) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "anvil CA", Organization: []string{"anvil"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	ca := &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
	return ca, keyPEM, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the PEM-encoded CA certificate.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Fingerprint returns "sha256:" and the lower-case hex SHA-256 of the CA
// certificate's DER encoding.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.cert.Raw) }

// Fingerprint returns "sha256:" and the lower-case hex SHA-256 of der.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// EnsureServingCert returns the paths of dir/server.crt and dir/server.key,
// a serving certificate signed by ca whose subject alternative names cover
// hosts (DNS names or IP addresses) plus localhost, 127.0.0.1 and ::1.
// The existing pair is kept when it was issued by ca, matches its key, covers
// every requested host and is valid for more than RenewBefore; otherwise a
// new pair is written. server.crt holds the leaf followed by the CA
// certificate, so that clients pinning the CA fingerprint see the CA.
func (ca *CA) EnsureServingCert(dir string, hosts []string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, ServerCertFile)
	keyFile = filepath.Join(dir, ServerKeyFile)
	dnsNames, ips, err := splitHosts(hosts)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	if ok, err := ca.servingCertUsable(certFile, keyFile, dnsNames, ips, now); err != nil {
		return "", "", err
	} else if ok {
		return certFile, keyFile, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create certificate directory: %w", err)
	}
	certPEM, keyPEM, err := ca.issueServing(dnsNames, ips, now)
	if err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write serving key: %w", err)
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("write serving certificate: %w", err)
	}
	return certFile, keyFile, nil
}

// splitHosts normalizes hosts (adding the defaults) into DNS names and IPs,
// without duplicates and in a stable order.
func splitHosts(hosts []string) ([]string, []net.IP, error) {
	var dnsNames []string
	var ips []net.IP
	seen := make(map[string]bool)
	// localhost, 127.0.0.1 and ::1 are always included.
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			if key := "ip:" + ip.String(); !seen[key] {
				seen[key] = true
				ips = append(ips, ip)
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if strings.ContainsAny(name, " /:") {
			return nil, nil, fmt.Errorf("serving certificate host %q is neither a DNS name nor an IP address", h)
		}
		if key := "dns:" + name; !seen[key] {
			seen[key] = true
			dnsNames = append(dnsNames, name)
		}
	}
	return dnsNames, ips, nil
}

// servingCertUsable reports whether the pair on disk can be kept. Missing or
// unparsable files only mean "issue a new one"; other read errors fail.
func (ca *CA) servingCertUsable(certFile, keyFile string, dnsNames []string, ips []net.IP, now time.Time) (bool, error) {
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read serving key: %w", err)
	}
	leaf, err := parseCertPEM(certPEM)
	if err != nil {
		return false, nil
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil || !key.PublicKey.Equal(leaf.PublicKey) {
		return false, nil
	}
	if leaf.CheckSignatureFrom(ca.cert) != nil {
		return false, nil
	}
	if now.Before(leaf.NotBefore) || now.Add(RenewBefore).After(leaf.NotAfter) {
		return false, nil
	}
	return coversHosts(leaf, dnsNames, ips), nil
}

// coversHosts reports whether every name and IP is literally among the
// certificate's subject alternative names.
func coversHosts(cert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	have := make(map[string]bool, len(cert.DNSNames))
	for _, n := range cert.DNSNames {
		have[strings.ToLower(n)] = true
	}
	for _, n := range dnsNames {
		if !have[n] {
			return false
		}
	}
	for _, ip := range ips {
		found := false
		for _, c := range cert.IPAddresses {
			if c.Equal(ip) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (ca *CA) issueServing(dnsNames []string, ips []net.IP, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ServingValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "anvil-controller", Organization: []string{"anvil"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create serving certificate: %w", err)
	}
	keyPEM, err = marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPEM = append(certPEM, ca.certPEM...)
	return certPEM, keyPEM, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// parseCertPEM returns the first certificate in data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	var key crypto.PrivateKey
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ECDSA", key)
	}
	return ec, nil
}

func marshalKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeFileAtomic writes data to a temporary file in path's directory with
// mode perm, syncs it and renames it over path, then syncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := createTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// createTemp writes data to a new, synced temporary file next to path and
// returns its name.
func createTemp(path string, data []byte, perm os.FileMode) (name string, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp uses 0600; Chmod sets the exact mode regardless of umask.
	if err := f.Chmod(perm); err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
