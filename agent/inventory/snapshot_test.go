package inventory

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jaypipes/ghw/pkg/snapshot"
)

var updateHostSnapshot = flag.Bool("update-host-snapshot", false,
	"replace "+hostSnapshot+" with a snapshot of this machine (then run -update)")

// TestUpdateHostSnapshot writes testdata/host-snapshot.tar.gz from the live
// machine with ghw's snapshot package, plus the files ghw's cloner leaves
// out but Collect reads: DMI, the NICs' address, MTU, link state, speed and
// driver, the disks' block sizes and their device attributes (model, serial,
// wwid, VPD pages), loop backing files and CPU online state. Of the mount
// table only block-device mounts are kept. Unlike ghw's
// own snapshots it therefore holds MAC addresses and serial numbers: only
// run it on a machine whose identifiers may be published.
func TestUpdateHostSnapshot(t *testing.T) {
	if !*updateHostSnapshot {
		t.Skip("run with -update-host-snapshot to regenerate " + hostSnapshot)
	}
	ctx := context.Background()
	scratch := t.TempDir()
	if err := snapshot.CloneTreeInto(ctx, scratch); err != nil {
		t.Fatal(err)
	}
	specs := []string{"/sys/devices/system/cpu/cpu*/online"}
	for _, a := range []string{
		"bios_date", "bios_vendor", "bios_version", "board_asset_tag", "board_name",
		"board_serial", "board_vendor", "board_version", "chassis_asset_tag",
		"chassis_serial", "chassis_type", "chassis_vendor", "chassis_version",
		"product_family", "product_name", "product_serial", "product_sku",
		"product_uuid", "product_version", "sys_vendor",
	} {
		specs = append(specs, "/sys/class/dmi/id/"+a)
	}
	nets, _ := filepath.Glob("/sys/class/net/*")
	for _, n := range nets {
		real, err := resolveLink(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(scratch, n)); err != nil {
			continue // ghw's cloner skips virtual NICs; so do we
		}
		for _, a := range []string{"address", "mtu", "operstate", "carrier", "speed", "duplex", "device"} {
			specs = append(specs, filepath.Join(real, a))
		}
		if dev, err := resolveLink(filepath.Join(real, "device")); err == nil {
			specs = append(specs, filepath.Join(dev, "driver"), filepath.Join(dev, "subsystem"))
		}
	}
	blocks, _ := filepath.Glob("/sys/block/*")
	for _, b := range blocks {
		if _, err := os.Lstat(filepath.Join(scratch, b)); err != nil {
			continue // ghw's cloner skips loop devices
		}
		real, err := resolveLink(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"queue/logical_block_size", "queue/physical_block_size", "wwid", "nsid", "loop/backing_file", "device"} {
			specs = append(specs, filepath.Join(real, a))
		}
		if dev, err := resolveLink(filepath.Join(real, "device")); err == nil {
			for _, a := range []string{"vendor", "model", "serial", "wwid", "vpd_pg80", "vpd_pg89", "name"} {
				specs = append(specs, filepath.Join(dev, a))
			}
		}
	}
	var existing []string
	for _, s := range specs {
		if m, _ := filepath.Glob(s); len(m) > 0 {
			existing = append(existing, s)
		}
	}
	if err := snapshot.CopyFilesInto(ctx, existing, scratch, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(hostSnapshot); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// ghw reads only the mounts of block devices (to find mounted
	// partitions); keep nothing else of the host's mount table.
	mounts := filepath.Join(scratch, "proc", "self", "mounts")
	b, err := os.ReadFile(mounts)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "/dev/") {
			keep = append(keep, line+"\n")
		}
	}
	if err := os.WriteFile(mounts, []byte(strings.Join(keep, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.PackFrom(ctx, hostSnapshot, scratch); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(hostSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", hostSnapshot, fi.Size())
}
