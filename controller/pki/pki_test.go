package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnsureCACreatesThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := EnsureCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	fp := ca.Fingerprint()
	if !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 {
		t.Fatalf("Fingerprint() = %q", fp)
	}
	cert := ca.Certificate()
	if !cert.IsCA || cert.NotAfter.Sub(cert.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("CA IsCA=%v validity %v", cert.IsCA, cert.NotAfter.Sub(cert.NotBefore))
	}
	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, CAKeyFile), 0o600)

	again, err := EnsureCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != fp {
		t.Errorf("reloaded fingerprint %s, want %s", again.Fingerprint(), fp)
	}
	if string(again.CertPEM()) != string(ca.CertPEM()) {
		t.Error("reloaded CA PEM differs")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestEnsureCARefusesCertWithoutKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := EnsureCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureCA(dir); err == nil {
		t.Fatal("EnsureCA replaced or accepted a CA without its key")
	}
}

func TestEnsureCARejectsMismatchedKey(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := EnsureCA(d); err != nil {
			t.Fatal(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(b, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureCA(a); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("EnsureCA with another CA's key: %v", err)
	}
}

func TestServingCertVerifiesForHosts(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, dir)
	certFile, keyFile, err := ca.EnsureServingCert(dir, []string{"controller.lab", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, keyFile, 0o600)
	leaf := readLeaf(t, certFile)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "controller.lab", "10.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.lab", Roots: roots}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
	if _, err := LoadServerTLS(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
}

func TestServingCertKeptOrRegenerated(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, dir)
	certFile, _, err := ca.EnsureServingCert(dir, []string{"a.lab"})
	if err != nil {
		t.Fatal(err)
	}
	first := readLeaf(t, certFile)

	// Same hosts (in another spelling): kept.
	if _, _, err := ca.EnsureServingCert(dir, []string{"A.lab."}); err != nil {
		t.Fatal(err)
	}
	if kept := readLeaf(t, certFile); kept.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("certificate covering all hosts was regenerated")
	}

	// A host it does not cover: regenerated, covering it.
	if _, _, err := ca.EnsureServingCert(dir, []string{"a.lab", "b.lab", "192.0.2.7"}); err != nil {
		t.Fatal(err)
	}
	second := readLeaf(t, certFile)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("certificate missing a requested host was not regenerated")
	}
	if err := second.VerifyHostname("b.lab"); err != nil {
		t.Error(err)
	}
	if err := second.VerifyHostname("192.0.2.7"); err != nil {
		t.Error(err)
	}

	// Issued by another CA: regenerated.
	other := mustCA(t, t.TempDir())
	if _, _, err := other.EnsureServingCert(dir, []string{"a.lab", "b.lab", "192.0.2.7"}); err != nil {
		t.Fatal(err)
	}
	if err := readLeaf(t, certFile).CheckSignatureFrom(other.Certificate()); err != nil {
		t.Errorf("certificate of another CA was kept: %v", err)
	}
}

func TestServingCertRenewedBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, dir)
	// Write a pair that expires in ten days.
	dnsNames, ips, err := splitHosts(nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.issueServing(dnsNames, ips, time.Now().Add(-ServingValidity+10*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	old := readLeaf(t, certFile)
	if _, _, err := ca.EnsureServingCert(dir, nil); err != nil {
		t.Fatal(err)
	}
	renewed := readLeaf(t, certFile)
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || time.Until(renewed.NotAfter) < RenewBefore {
		t.Errorf("certificate expiring %v was not renewed (now expires %v)", old.NotAfter, renewed.NotAfter)
	}
}

func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, dir)
	certFile, keyFile, err := ca.EnsureServingCert(dir, []string{"controller.lab"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, certFile, keyFile)

	otherDir := t.TempDir()
	other := mustCA(t, otherDir)
	// An impostor presents the real (public) CA certificate after a leaf of
	// its own CA: pinning must not be fooled by a matching chain member.
	impCert, impKey, err := other.EnsureServingCert(otherDir, []string{"controller.lab"})
	if err != nil {
		t.Fatal(err)
	}
	impChain, err := os.ReadFile(impCert)
	if err != nil {
		t.Fatal(err)
	}
	impChain = append(impChain, ca.CertPEM()...)
	if err := os.WriteFile(impCert, impChain, 0o644); err != nil {
		t.Fatal(err)
	}
	impostor := serveTLS(t, impCert, impKey)

	for _, tc := range []struct {
		name        string
		addr        string
		caPEM       []byte
		fingerprint string
		serverName  string
		option      string // WithServerName, when set
		wantErr     bool
	}{
		{name: "ca pem localhost", addr: addr, caPEM: ca.CertPEM(), serverName: "localhost"},
		{name: "ca pem ip", addr: addr, caPEM: ca.CertPEM(), serverName: "127.0.0.1"},
		{name: "ca pem custom host", addr: addr, caPEM: ca.CertPEM(), serverName: "controller.lab"},
		{name: "fingerprint", addr: addr, fingerprint: ca.Fingerprint(), serverName: "localhost"},
		{name: "fingerprint ip", addr: addr, fingerprint: ca.Fingerprint(), option: "127.0.0.1"},
		{name: "fingerprint ip without name", addr: addr, fingerprint: ca.Fingerprint(), serverName: "127.0.0.1", wantErr: true},
		{name: "fingerprint wrong ip", addr: addr, fingerprint: ca.Fingerprint(), option: "192.0.2.1", wantErr: true},
		{name: "fingerprint upper-case colons", addr: addr, fingerprint: colonHex(ca.Fingerprint()), serverName: "controller.lab"},
		{name: "pem and fingerprint", addr: addr, caPEM: ca.CertPEM(), fingerprint: ca.Fingerprint(), serverName: "localhost"},
		{name: "fingerprint wrong host", addr: addr, fingerprint: ca.Fingerprint(), serverName: "other.lab", wantErr: true},
		{name: "wrong fingerprint", addr: addr, fingerprint: other.Fingerprint(), serverName: "localhost", wantErr: true},
		{name: "different ca", addr: addr, caPEM: other.CertPEM(), serverName: "localhost", wantErr: true},
		{name: "pem right fingerprint wrong", addr: addr, caPEM: ca.CertPEM(), fingerprint: other.Fingerprint(), serverName: "localhost", wantErr: true},
		{name: "impostor with pinned ca in chain", addr: impostor, fingerprint: ca.Fingerprint(), serverName: "controller.lab", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []ClientOption
			if tc.option != "" {
				opts = append(opts, WithServerName(tc.option))
			}
			cfg, err := ClientTLS(tc.caPEM, tc.fingerprint, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if tc.serverName != "" {
				cfg.ServerName = tc.serverName
			}
			d := &net.Dialer{Timeout: 5 * time.Second}
			conn, err := tls.DialWithDialer(d, "tcp", tc.addr, cfg)
			if err == nil {
				conn.Close()
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("handshake error %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

func TestClientTLSNeedsTrust(t *testing.T) {
	if _, err := ClientTLS(nil, ""); !errors.Is(err, ErrNoTrust) {
		t.Errorf("ClientTLS(nil, \"\") = %v, want ErrNoTrust", err)
	}
	if _, err := ClientTLS([]byte("not pem"), ""); err == nil {
		t.Error("ClientTLS accepted a PEM without certificates")
	}
	if _, err := ClientTLS(nil, "sha256:abcd"); err == nil {
		t.Error("ClientTLS accepted a short fingerprint")
	}
}

func mustCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := EnsureCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func readLeaf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCertPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode %v, want %v", path, got, want)
	}
}

func colonHex(fp string) string {
	h := strings.ToUpper(strings.TrimPrefix(fp, "sha256:"))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// serveTLS accepts TLS connections on loopback and completes handshakes
// until the test ends.
func serveTLS(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	cfg, err := LoadServerTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}
