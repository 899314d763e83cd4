package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/watch"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"--cluster-interface", "vlan100,vlan2*", "--cluster-interface", "eth1",
		"--default-egress", "deny", "--snat-v4", "192.0.2.1", "--masquerade", "--policies-dir", "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.cfg.ClusterInterfaces, " "); got != "vlan100 vlan2* eth1" {
		t.Errorf("interfaces %q", got)
	}
	if c.cfg.DefaultEgress != config.Deny || c.cfg.DefaultIngress != config.Allow || c.cfg.SNATv4.String() != "192.0.2.1" || !c.cfg.Masquerade {
		t.Errorf("config %+v", c.cfg)
	}
	for _, bad := range [][]string{
		{"--default-egress", "maybe"},
		{"--snat-v4", "not-an-ip"},
		{"--snat-v4", "2001:db8::1"},
		{"--kubeconfig", "k", "--policies-dir", "d"},
		{"stray"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

// TestDryRunPrintsGolden runs --dry-run over a policies directory holding
// one golden case and expects the golden's ruleset.
func TestDryRunPrintsGolden(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../compile/testdata/basic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "basic.yaml"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../compile/testdata/basic.nft")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got, stderr bytes.Buffer
	err = dryRun(ctx, watch.NewDir(dir, watch.Options{}), config.Defaults(), &got, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("dry-run output differs from basic.nft:\n%s", got.String())
	}
}
