package firewall

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// TestGuardReplacedByApply plays the boot in a network namespace of the
// test's own: the guard unit's command loads guard.nft, anvil-firewall's
// applier replaces the guard table with a compiled ruleset, and the
// guard's command run again leaves that ruleset alone.
func TestGuardReplacedByApply(t *testing.T) {
	netnstest.RequireRoot(t)
	nns := netnstest.New(t, "anvil-fwimage")
	ns, h := nns.Name, nns.FD
	table := config.Defaults().Table

	// The unit's ExecStart, with the overlay's guard.nft for the image's.
	u := parseUnit(t, overlayFile(t, "/etc/systemd/system/"+GuardUnit))
	start := u.one(t, "Service", "ExecStart")
	script, ok := strings.CutPrefix(start, "/bin/sh -c ")
	if !ok || len(script) < 2 || script[0] != '\'' || script[len(script)-1] != '\'' {
		t.Fatalf("ExecStart=%s: want /bin/sh -c '...'", start)
	}
	guardPath, err := filepath.Abs(filepath.Join("overlay", GuardRuleset))
	if err != nil {
		t.Fatal(err)
	}
	script = strings.ReplaceAll(script[1:len(script)-1], GuardRuleset, guardPath)
	guard := func() {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "exec", ns, "/bin/sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("guard: %v\n%s", err, out)
		}
	}
	list := func() string {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
		return string(out)
	}

	guard()
	booted := list()
	if !strings.Contains(booted, "table inet "+table+" {") || !strings.Contains(booted, "chain guard {") ||
		!strings.Contains(booted, "hook forward priority filter; policy drop;") {
		t.Fatalf("after the guard:\n%s", booted)
	}
	guard()
	if again := list(); again != booted {
		t.Errorf("the guard run twice changed the ruleset:\n%s\nthen\n%s", booted, again)
	}

	a, err := apply.New(apply.WithNetNS(h))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cfg := config.Defaults()
	cfg.DefaultEgress = config.Deny
	rs, errs := compile.Compile(cluster.Snapshot{}, cfg)
	if len(errs) > 0 {
		t.Fatalf("compile: %v", errs)
	}
	changed, err := a.Apply(rs)
	if err != nil || !changed {
		t.Fatalf("apply over the guard: changed %v, %v", changed, err)
	}
	applied := list()
	if strings.Contains(applied, "chain guard {") || strings.Count(applied, "table inet ") != 1 ||
		!strings.Contains(applied, "table inet "+a.Table()+" {") {
		t.Fatalf("after the first apply the guard is still there:\n%s", applied)
	}
	if !strings.Contains(applied, "hook forward") {
		t.Errorf("the applied table has no forward hook:\n%s", applied)
	}
	// A restart of the guard (or of the machine's boot target) must not
	// put it back over the cluster's ruleset.
	guard()
	if again := list(); again != applied {
		t.Errorf("the guard loaded over the applied table:\n%s", again)
	}
}
