package disks

import (
	"os"
	"path/filepath"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestAllowlist(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "by-id-a")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	al, err := NewAllowlist([]string{link})
	if err != nil {
		t.Fatal(err)
	}
	if !al.Allows(a) || !al.Allows(link) {
		t.Error("allowlisted disk (by symlink and by target) not allowed")
	}
	if al.Allows(b) {
		t.Error("disk not on the allowlist is allowed")
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: a}, {Path: b}, {Path: "/dev/sda"}}}
	al.Filter(inv)
	if len(inv.Disks) != 1 || inv.Disks[0].Path != a {
		t.Errorf("Filter kept %v, want only %s", inv.Disks, a)
	}
	if _, err := al.Select(inv, []string{b}); err == nil {
		t.Error("Select of a disk off the allowlist succeeded")
	}
	if got, err := al.Select(inv, nil); err != nil || len(got) != 1 {
		t.Errorf("Select(all) = %v, %v; want the one allowed disk", got, err)
	}
	if _, err := NewAllowlist([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("allowlist with a missing path accepted")
	}
	var all *Allowlist
	if !all.Allows("/dev/anything") {
		t.Error("nil allowlist must allow everything")
	}
}
