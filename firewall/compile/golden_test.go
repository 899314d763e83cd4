package compile

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/internal/policygen"
	"github.com/anvil-metal/anvil/firewall/model"
)

var update = flag.Bool("update", false, "rewrite the golden .nft files")

// loadCase reads a multi-document YAML case. A first line
// "# config: {json}" overrides fields of config.Defaults().
func loadCase(t *testing.T, path string) (cluster.Snapshot, config.Config) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, cfg, err := policygen.Parse(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cfg == nil {
		c := config.Defaults()
		cfg = &c
	}
	return s, *cfg
}

// TestGolden compiles each testdata/*.yaml and compares the rendered
// ruleset (and the errors) with testdata/*.nft. go test -update rewrites.
func TestGolden(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.yaml")
	if len(cases) == 0 {
		t.Fatal("no golden cases")
	}
	for _, path := range cases {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, cfg := loadCase(t, path)
			rs, errs := Compile(s, cfg)
			var got strings.Builder
			for _, err := range errs {
				fmt.Fprintf(&got, "# error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
			got.WriteString(model.Render(rs))
			golden := strings.TrimSuffix(path, ".yaml") + ".nft"
			if *update {
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got.String() != string(want) {
				t.Errorf("%s differs from the compiler's output:\n%s", golden, got.String())
			}
			// Same output for reversed input order.
			rev := s
			rev.Policies = reversed(s.Policies)
			rev.Pods = reversed(s.Pods)
			rev.Namespaces = reversed(s.Namespaces)
			rs2, _ := Compile(rev, cfg)
			if model.Render(rs2) != model.Render(rs) {
				t.Error("output depends on input order")
			}
		})
	}
}

func reversed[T any](in []T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[len(in)-1-i] = v
	}
	return out
}
