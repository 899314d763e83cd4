package watch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestRESTConfig(t *testing.T) {
	t.Run("kubeconfig", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "kubeconfig")
		const kc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
		if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := RESTConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.Host != "https://127.0.0.1:6443" || c.BearerToken != "secret" {
			t.Errorf("config = host %q token %q", c.Host, c.BearerToken)
		}
	})
	t.Run("missing kubeconfig", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope")
		_, err := RESTConfig(p)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("RESTConfig(%s) = %v, want ErrNotExist naming the file", p, err)
		}
	})
	t.Run("broken kubeconfig", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(p, []byte("clusters: [unclosed"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := RESTConfig(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("RESTConfig(broken) = %v, want an error naming the file", err)
		}
	})
	t.Run("not in a cluster", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		t.Setenv("KUBERNETES_SERVICE_PORT", "")
		_, err := RESTConfig("")
		if !errors.Is(err, rest.ErrNotInCluster) || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
			t.Errorf("RESTConfig(\"\") = %v, want ErrNotInCluster explaining why", err)
		}
	})
}
