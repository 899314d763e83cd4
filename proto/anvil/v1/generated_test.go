package anvilv1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the Go code with the pinned plugins
// into a temp dir and fails when the committed files differ: run `make proto`.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: run hack/install-deps.sh (make test does)")
	}
	out := t.TempDir()
	cmd := exec.Command("../../../hack/gen-proto.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-proto: %v\n%s", err, b)
	}
	gen, err := filepath.Glob(filepath.Join(out, "anvil/v1/*.go"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated files in %s (%v)", out, err)
	}
	for _, g := range gen {
		want, _ := os.ReadFile(g)
		have, err := os.ReadFile(filepath.Base(g))
		if err != nil {
			t.Errorf("%s is generated but not committed: run make proto", filepath.Base(g))
			continue
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s is stale: run make proto", filepath.Base(g))
		}
	}
}
