// Package diskkind is the vocabulary of anvilv1.Disk.Kind (types.proto field
// 14) and the rules every consumer of an inventory applies to it: which
// block devices are physical disks, how records of agents that predate the
// field are read, and how the paths of one multipath LUN (one WWN) are
// counted once. The agent's inventory sets the kind from sysfs; the agent's
// disk selection and the controller's sizes and install-target choice read
// it through this package only. It is pure: no I/O, no state.
package diskkind

import (
	"fmt"
	"slices"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Values of anvilv1.Disk.Kind.
const (
	// Disk is a physical disk or a LUN of a storage array: the only kind
	// that is an install or erase target and counts towards sizes.
	Disk = "disk"
	// Virtual is a block device made by the kernel on top of other
	// devices or memory: device-mapper (LVM, dm-crypt, dm-multipath), MD
	// RAID, loop, RAM disks, zram, nbd, drbd, rbd, bcache.
	Virtual = "virtual"
	// Optical is a CD/DVD/BD drive, including a BMC's virtual media.
	Optical = "optical"
)

// FromName classifies a block device by its kernel name alone, for records
// of agents that predate the kind field: "sr*" is optical; "dm-*", "md*",
// "loop*", "ram*", "zram*", "nbd*", "drbd*", "rbd*" and "bcache*" are
// virtual; every other name (and an empty one) is a disk.
func FromName(name string) string {
	if strings.HasPrefix(name, "sr") {
		return Optical
	}
	for _, p := range []string{"dm-", "md", "loop", "ram", "zram", "nbd", "drbd", "rbd", "bcache"} {
		if strings.HasPrefix(name, p) {
			return Virtual
		}
	}
	return Disk
}

// Of returns the kind of d: its Kind field when set, else [FromName] of its
// kernel name (an agent older than the field sent ""). A kind this package
// does not know is returned as is, and is not a disk.
func Of(d *anvilv1.Disk) string {
	if k := d.GetKind(); k != "" {
		return k
	}
	return FromName(d.GetName())
}

// IsDisk reports whether d is a physical disk ([Of] is [Disk]).
func IsDisk(d *anvilv1.Disk) bool {
	return d != nil && Of(d) == Disk
}

// Physical returns the physical disks among ds, sorted by path, with the
// paths of a multipath LUN reduced to one: of the disks sharing a WWN
// (compared case-insensitively), a serial and a size, only the first by
// path is kept. Disks without a WWN are all kept, and so are disks that
// share a WWN but not serial and size (drives or bridges that report a
// bogus shared identifier are distinct disks: dropping one would leave it
// unerased). Virtual, optical and unknown kinds and nil
// entries are dropped; removable disks are kept (callers decide).
func Physical(ds []*anvilv1.Disk) []*anvilv1.Disk {
	out := make([]*anvilv1.Disk, 0, len(ds))
	for _, d := range ds {
		if IsDisk(d) {
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(a, b *anvilv1.Disk) int { return strings.Compare(a.GetPath(), b.GetPath()) })
	seen := map[string]bool{}
	return slices.DeleteFunc(out, func(d *anvilv1.Disk) bool {
		if d.GetWwn() == "" {
			return false
		}
		w := fmt.Sprintf("%s\x00%s\x00%d", strings.ToLower(d.GetWwn()), d.GetSerial(), d.GetSizeBytes())
		if seen[w] {
			return true
		}
		seen[w] = true
		return false
	})
}
