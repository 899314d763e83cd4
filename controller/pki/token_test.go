package pki

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestNewToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two tokens are equal")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(a, TokenPrefix))
	if !strings.HasPrefix(a, TokenPrefix) || err != nil || len(raw) != 32 {
		t.Fatalf("token %q: want %s + base64url of 32 bytes (%v)", a, TokenPrefix, err)
	}
	if h := HashToken(a); len(h) != 32 || !TokenMatches(h, a) || TokenMatches(h, b) {
		t.Error("HashToken/TokenMatches disagree")
	}
}

func TestEnsureTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets", "operator.token")
	tok, created, err := EnsureTokenFile(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Dir(path), 0o700)
	again, created, err := EnsureTokenFile(path)
	if err != nil || created || again != tok {
		t.Fatalf("second call: %q created=%v err=%v, want %q", again, created, err, tok)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestEnsureTokenFileConcurrentCallersAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	const n = 8
	toks := make([]string, n)
	var created int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, c, err := EnsureTokenFile(path)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			toks[i] = tok
			if c {
				created++
			}
		}()
	}
	wg.Wait()
	onDisk, err := ReadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		if tok != onDisk {
			t.Errorf("caller %d got %q, file holds %q", i, tok, onDisk)
		}
	}
	if created != 1 {
		t.Errorf("%d callers report created, want 1", created)
	}
}

func TestEnsureTokenFileRejectsEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureTokenFile(path); err == nil {
		t.Fatal("empty token file accepted")
	}
}
