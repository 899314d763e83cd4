// Package disks decides which block devices the agent may touch. In host
// mode only the devices on the operator's allowlist exist for the agent: the
// inventory it reports and every erase or write are restricted to them. In
// boot mode (from RAM on the machine) every disk is the agent's, except
// those carrying a protected marker (issue: disk pipeline).
package disks

import (
	"fmt"
	"path/filepath"
	"slices"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Allowlist is a set of device paths, compared after resolving symlinks.
// A nil *Allowlist allows every disk.
type Allowlist struct {
	paths []string
}

// NewAllowlist resolves each path (e.g. /dev/disk/by-id/... → /dev/sdb);
// paths that do not exist are an error, so a typo does not silently drop a
// disk from the agent's view.
func NewAllowlist(paths []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, p := range paths {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, fmt.Errorf("disk allowlist: %w", err)
		}
		a.paths = append(a.paths, r)
	}
	return a, nil
}

// Allows reports whether the device at path may be touched.
func (a *Allowlist) Allows(path string) bool {
	if a == nil {
		return true
	}
	r, err := filepath.EvalSymlinks(path)
	if err != nil {
		r = filepath.Clean(path)
	}
	return slices.Contains(a.paths, r)
}

// Paths returns the resolved allowed paths (nil for allow-all).
func (a *Allowlist) Paths() []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.paths)
}

// Filter drops the inventory's disks that are not allowed.
func (a *Allowlist) Filter(inv *anvilv1.Inventory) {
	if a == nil || inv == nil {
		return
	}
	inv.Disks = slices.DeleteFunc(inv.Disks, func(d *anvilv1.Disk) bool { return !a.Allows(d.GetPath()) })
}

// Select returns the disks to act on: the requested ones (each must be
// allowed and present in the inventory) or, when none are requested, every
// allowed non-removable disk of the inventory.
func (a *Allowlist) Select(inv *anvilv1.Inventory, requested []string) ([]*anvilv1.Disk, error) {
	var out []*anvilv1.Disk
	if len(requested) == 0 {
		for _, d := range inv.GetDisks() {
			if a.Allows(d.GetPath()) && !d.GetRemovable() {
				out = append(out, d)
			}
		}
		return out, nil
	}
	for _, p := range requested {
		if !a.Allows(p) {
			return nil, fmt.Errorf("disk %s is not on the agent's allowlist", p)
		}
		i := slices.IndexFunc(inv.GetDisks(), func(d *anvilv1.Disk) bool { return d.GetPath() == p })
		if i < 0 {
			return nil, fmt.Errorf("disk %s is not in the inventory", p)
		}
		out = append(out, inv.GetDisks()[i])
	}
	return out, nil
}
