// Package disks decides which block devices the agent may touch. Only
// physical disks (agent/disks/diskkind: not device-mapper, MD, loop or
// optical devices) are erase and install targets. In host mode only the
// devices on the operator's allowlist exist for the agent: the inventory it
// reports and every erase or write are restricted to them, and they count
// as its disks. In boot mode (from RAM on the machine) every physical disk
// is the agent's, except those that carry the protect marker (a GPT
// partition named anvil-protected, UEFI 2.10 chapter 5) or whose partition
// table cannot be read.
package disks

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/diskkind"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// ErrNotADisk is a requested target that is a virtual or optical device.
var ErrNotADisk = errors.New("not a physical disk")

// Allowlist is a set of device nodes, compared after resolving symlinks
// (/dev/disk/by-id/... → /dev/sdb) on both sides. A nil *Allowlist allows
// every disk.
type Allowlist struct {
	paths []string
}

// NewAllowlist resolves each path (e.g. /dev/disk/by-id/... → /dev/sdb);
// paths that do not resolve are an error, so a typo does not silently drop
// a disk from the agent's view.
func NewAllowlist(paths []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, p := range paths {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, fmt.Errorf("disk allowlist: resolving %s: %w", p, err)
		}
		a.paths = append(a.paths, r)
	}
	return a, nil
}

// Allows reports whether the device at path may be touched: path resolves
// (through every symlink) to a node on the allowlist. A path that does not
// resolve is not allowed.
func (a *Allowlist) Allows(path string) bool {
	if a == nil {
		return true
	}
	r, err := filepath.EvalSymlinks(path)
	return err == nil && slices.Contains(a.paths, r)
}

// Paths returns the resolved allowed paths (nil for allow-all).
func (a *Allowlist) Paths() []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.paths)
}

// Filter drops the inventory's disks that are not allowed. The operator's
// allowlist says what the machine's disks are: an allowed virtual device (a
// loop device in host mode) is reported as kind "disk"; an optical one stays
// optical.
func (a *Allowlist) Filter(inv *anvilv1.Inventory) {
	if a == nil || inv == nil {
		return
	}
	inv.Disks = slices.DeleteFunc(inv.Disks, func(d *anvilv1.Disk) bool { return !a.Allows(d.GetPath()) })
	for _, d := range inv.Disks {
		if diskkind.Of(d) == diskkind.Virtual {
			d.Kind = diskkind.Disk
		}
	}
}

// CheckTarget fails, wrapping [ErrNotADisk], when d is not a physical disk
// ([diskkind.IsDisk]): no virtual or optical device is ever erased or
// installed to.
func CheckTarget(d *anvilv1.Disk) error {
	if diskkind.IsDisk(d) {
		return nil
	}
	return fmt.Errorf("%w: %s has kind %q", ErrNotADisk, d.GetPath(), diskkind.Of(d))
}

// Select returns the disks to act on.
//
// With none requested: every allowed, non-removable physical disk of the
// inventory, by path, and of the paths of a multipath LUN (one WWN) only
// the first, so that no LUN is erased twice at once.
//
// Otherwise the requested ones, each a device path or a symlink to one: it
// must be allowed, resolve to the node of a disk in the inventory, and that
// disk must be a physical disk ([CheckTarget]). Requests that resolve to the
// same device, or to paths of the same LUN, are kept once.
func (a *Allowlist) Select(inv *anvilv1.Inventory, requested []string) ([]*anvilv1.Disk, error) {
	var out []*anvilv1.Disk
	if len(requested) == 0 {
		for _, d := range diskkind.Physical(inv.GetDisks()) {
			if a.Allows(d.GetPath()) && !d.GetRemovable() {
				out = append(out, d)
			}
		}
		return out, nil
	}
	seen := map[string]bool{}
	for _, p := range requested {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
		if !a.Allows(r) {
			return nil, fmt.Errorf("disk %s (%s) is not on the agent's allowlist", p, r)
		}
		i := slices.IndexFunc(inv.GetDisks(), func(d *anvilv1.Disk) bool {
			dr, err := filepath.EvalSymlinks(d.GetPath())
			return err == nil && dr == r
		})
		if i < 0 {
			return nil, fmt.Errorf("disk %s (%s) is not in the inventory", p, r)
		}
		d := inv.GetDisks()[i]
		if err := CheckTarget(d); err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
		key := "path:" + r
		if w := d.GetWwn(); w != "" {
			key = "wwn:" + strings.ToLower(w)
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, d)
		}
	}
	return out, nil
}
