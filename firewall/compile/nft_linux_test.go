package compile

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
)

// TestGoldensLoadIntoKernel feeds every golden case's rendering to nft -f
// in a network namespace of its own: the text the compiler prints for
// --dry-run and the nft baseline must be a ruleset the kernel accepts.
func TestGoldensLoadIntoKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft is required (hack/install-deps.sh installs nftables)")
	}
	ns := fmt.Sprintf("anvil-golden-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	cases, _ := filepath.Glob("testdata/*.yaml")
	for _, path := range cases {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, cfg := loadCase(t, path)
			rs, _ := Compile(s, cfg)
			for i := 0; i < 2; i++ { // the second time replaces the first
				cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(model.RenderReplace(rs))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("nft -f: %v: %s", err, out)
				}
			}
			out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", cfg.Table).CombinedOutput()
			if err != nil {
				t.Fatalf("nft list: %v: %s", err, out)
			}
			for _, c := range rs.Chains {
				if !strings.Contains(string(out), "chain "+c.Name+" {") {
					t.Errorf("chain %s missing from the kernel's table", c.Name)
				}
			}
		})
	}
}
