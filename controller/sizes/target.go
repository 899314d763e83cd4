package sizes

import (
	"errors"
	"fmt"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/diskkind"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Errors of [TargetDisk]; check them with errors.Is.
var (
	// ErrNoSuchDisk: the requested disk is not in the inventory.
	ErrNoSuchDisk = errors.New("no such disk")
	// ErrNotADisk: the requested device is virtual or optical.
	ErrNotADisk = errors.New("not a physical disk")
	// ErrNoTargetDisk: no disk was requested and the machine has no
	// non-removable physical disk.
	ErrNoTargetDisk = errors.New("no non-removable physical disk to install to")
)

// TargetDisk chooses the disk an install of a machine with inventory inv
// goes to.
//
// With want set (a device path, serial or WWN), want is returned as given
// (a serial survives the reboots that may rename /dev/sdX) when it names a
// physical disk of the inventory (by [diskkind.IsDisk]; removable ones
// included, since the operator named it). When it names only virtual or
// optical devices (/dev/dm-0, /dev/sr0) the error wraps [ErrNotADisk];
// when it names nothing, [ErrNoSuchDisk].
//
// With want empty, the path of the first disk by path among
// [diskkind.Physical] that is not removable: virtual and optical devices
// are never chosen, nor, of the paths of a multipath LUN (one WWN), any
// but the first. None is [ErrNoTargetDisk].
func TargetDisk(inv *anvilv1.Inventory, want string) (string, error) {
	if want == "" {
		for _, d := range diskkind.Physical(inv.GetDisks()) {
			if !d.GetRemovable() {
				return d.GetPath(), nil
			}
		}
		return "", fmt.Errorf("%w (%s)", ErrNoTargetDisk, describe(inv))
	}
	var other *anvilv1.Disk
	for _, d := range inv.GetDisks() {
		if d == nil || (d.GetPath() != want && !sameID(d.GetSerial(), want) && !sameID(d.GetWwn(), want)) {
			continue
		}
		if diskkind.IsDisk(d) {
			return want, nil
		}
		other = d
	}
	if other != nil {
		named := want
		if other.GetPath() != want {
			named += " (" + other.GetPath() + ")"
		}
		return "", fmt.Errorf("%w: %s has kind %q; name a physical disk (%s)",
			ErrNotADisk, named, diskkind.Of(other), describe(inv))
	}
	return "", fmt.Errorf("%w: no disk %s (by path, serial or WWN) in the inventory (%s)", ErrNoSuchDisk, want, describe(inv))
}

// sameID reports whether a disk's serial or WWN is set and equals want.
func sameID(id, want string) bool {
	return id != "" && id == want
}

// describe lists the inventory's block devices for an error message, e.g.
// "disks: /dev/nvme0n1; not disks: /dev/dm-0 (virtual), /dev/sr0 (optical)".
func describe(inv *anvilv1.Inventory) string {
	var disks, others []string
	for _, d := range inv.GetDisks() {
		switch {
		case d == nil:
		case diskkind.IsDisk(d) && d.GetRemovable():
			disks = append(disks, d.GetPath()+" (removable)")
		case diskkind.IsDisk(d):
			disks = append(disks, d.GetPath())
		default:
			others = append(others, fmt.Sprintf("%s (%s)", d.GetPath(), diskkind.Of(d)))
		}
	}
	if len(disks) == 0 && len(others) == 0 {
		return "the inventory lists no block device"
	}
	out := "disks: none"
	if len(disks) > 0 {
		out = "disks: " + strings.Join(disks, ", ")
	}
	if len(others) > 0 {
		out += "; not disks: " + strings.Join(others, ", ")
	}
	return out
}
