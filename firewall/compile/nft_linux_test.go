package compile

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// TestGoldensLoadIntoKernel feeds every golden case's rendering to nft -f
// in a network namespace of its own: the text the compiler prints for
// --dry-run and the nft baseline must be a ruleset the kernel accepts.
func TestGoldensLoadIntoKernel(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "anvil-golden")
	cases, _ := filepath.Glob("testdata/*.yaml")
	for _, path := range cases {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, cfg := loadCase(t, path)
			rs, _ := Compile(s, cfg)
			for i := 0; i < 2; i++ { // the second time replaces the first
				ns.Nft(t, model.RenderReplace(rs), "-f", "-")
			}
			out := ns.List(t, cfg.Table)
			for _, c := range rs.Chains {
				if !strings.Contains(out, "chain "+c.Name+" {") {
					t.Errorf("chain %s missing from the kernel's table", c.Name)
				}
			}
		})
	}
}
