package disks

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	// A device that no longer resolves is not allowed, even by its
	// allowlisted name.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if al.Allows(a) || al.Allows(link) {
		t.Error("a vanished device is still allowed")
	}
}

// TestSelectDefault: the "every disk" default of erase and install takes
// physical disks only, one path per LUN.
func TestSelectDefault(t *testing.T) {
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{
		{Name: "dm-0", Path: "/dev/dm-0", Kind: "virtual"},
		{Name: "md0", Path: "/dev/md0"}, // an older record: virtual by name
		{Name: "sr0", Path: "/dev/sr0", Kind: "optical"},
		{Name: "loop0", Path: "/dev/loop0", Kind: "virtual"},
		{Name: "sdc", Path: "/dev/sdc", Kind: "disk", Wwn: "0x600a0b8000110022"}, // second path of sdb's LUN
		{Name: "sdb", Path: "/dev/sdb", Kind: "disk", Wwn: "0x600a0b8000110022"},
		{Name: "sdd", Path: "/dev/sdd", Kind: "disk", Removable: true},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Kind: "disk"},
		{Name: "vda", Path: "/dev/vda"}, // an older record: a disk
	}}
	got, err := (*Allowlist)(nil).Select(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range got {
		paths = append(paths, d.GetPath())
	}
	if want := []string{"/dev/nvme0n1", "/dev/sdb", "/dev/vda"}; !slices.Equal(paths, want) {
		t.Errorf("Select(every disk) = %v, want %v", paths, want)
	}
}

func TestCheckTarget(t *testing.T) {
	for _, d := range []*anvilv1.Disk{
		{Name: "dm-0", Path: "/dev/dm-0", Kind: "virtual"},
		{Name: "sr0", Path: "/dev/sr0"},
		{Name: "st0", Path: "/dev/st0", Kind: "tape"},
	} {
		if err := CheckTarget(d); !errors.Is(err, ErrNotADisk) {
			t.Errorf("CheckTarget(%v) = %v, want ErrNotADisk", d, err)
		}
	}
	for _, d := range []*anvilv1.Disk{{Name: "sda", Path: "/dev/sda", Kind: "disk"}, {Path: "/dev/loop7"}} {
		if err := CheckTarget(d); err != nil {
			t.Errorf("CheckTarget(%v) = %v, want nil", d, err)
		}
	}
}
