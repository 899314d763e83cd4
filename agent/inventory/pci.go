package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jaypipes/ghw/pkg/pci"
	"github.com/jaypipes/pcidb"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// pciClassDisplay is the PCI base class of display controllers (VGA, XGA,
// 3D controllers), the prefix of anvilv1.PCIDevice.ClassId for GPUs.
const pciClassDisplay = "03"

// PCIDevicesFromSysfs lists the running machine's PCI functions from
// /sys/bus/pci/devices with ids and driver only (no pci.ids names), sorted
// by address. A machine without a PCI bus has none.
func PCIDevicesFromSysfs() ([]*anvilv1.PCIDevice, error) {
	return pciDevicesFromSysfs(liveRoot)
}

func pciDevicesFromSysfs(root string) ([]*anvilv1.PCIDevice, error) {
	dir := filepath.Join(root, "sys", "bus", "pci", "devices")
	entries, err := os.ReadDir(dir)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, errAttr(dir, err)
	}
	var out []*anvilv1.PCIDevice
	for _, e := range entries {
		if !isPCIAddress(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		d := &anvilv1.PCIDevice{
			Address:   e.Name(),
			VendorId:  hexID(readAttr(filepath.Join(p, "vendor")), 4),
			ProductId: hexID(readAttr(filepath.Join(p, "device")), 4),
			// class is 0xBBSSPP (base class, subclass, programming
			// interface); ClassId is BBSS as lspci -n prints it.
			ClassId: hexID(readAttr(filepath.Join(p, "class")), 6),
			Driver:  linkBase(filepath.Join(p, "driver")),
		}
		if len(d.ClassId) == 6 {
			d.ClassId = d.ClassId[:4]
		}
		if d.VendorId == "" || d.ProductId == "" {
			// Older snapshots carry only modalias
			// (pci:vVVVVVVVVdDDDDDDDDsv...bcBBscSSiPP).
			fillFromModalias(d, readAttr(filepath.Join(p, "modalias")))
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *anvilv1.PCIDevice) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

// hexID normalises a sysfs id such as "0x8086" to n lower-case hex digits
// without prefix ("8086"); anything else is "".
func hexID(s string, n int) string {
	s = strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if len(s) != n {
		return ""
	}
	for _, r := range s {
		if !isHex(r) {
			return ""
		}
	}
	return s
}

// fillFromModalias sets the empty ids of d from a PCI modalias.
func fillFromModalias(d *anvilv1.PCIDevice, m string) {
	rest, ok := strings.CutPrefix(m, "pci:")
	if !ok || len(rest) < len("v00008086d00001234sv00000000sd00000000bc03sc00i00") {
		return
	}
	fill(&d.VendorId, hexID(rest[5:9], 4))
	fill(&d.ProductId, hexID(rest[14:18], 4))
	if rest[38:40] == "bc" && rest[42:44] == "sc" {
		fill(&d.ClassId, hexID(rest[40:42]+rest[44:46], 4))
	}
}

// pciDevicesFromGHW converts ghw's PCI devices (named from pci.ids).
func pciDevicesFromGHW(devs []*pci.Device) []*anvilv1.PCIDevice {
	out := make([]*anvilv1.PCIDevice, 0, len(devs))
	for _, g := range devs {
		d := &anvilv1.PCIDevice{Address: g.Address, Driver: g.Driver}
		if g.Vendor != nil {
			d.VendorId, d.Vendor = strings.ToLower(g.Vendor.ID), known(g.Vendor.Name)
		}
		if g.Product != nil {
			d.ProductId, d.Product = strings.ToLower(g.Product.ID), known(g.Product.Name)
		}
		if g.Class != nil && g.Subclass != nil {
			d.ClassId = strings.ToLower(g.Class.ID + g.Subclass.ID)
			d.ClassName = known(g.Subclass.Name)
		}
		if g.Class != nil {
			fill(&d.ClassName, known(g.Class.Name))
		}
		out = append(out, d)
	}
	return out
}

// nameFromPCIDB fills the names of d from the pci.ids database, for devices
// read from sysfs.
func nameFromPCIDB(d *anvilv1.PCIDevice, db *pcidb.PCIDB) {
	if v := db.Vendors[d.VendorId]; v != nil {
		fill(&d.Vendor, v.Name)
	}
	if p := db.Products[d.VendorId+d.ProductId]; p != nil {
		fill(&d.Product, p.Name)
	}
	if len(d.ClassId) != 4 {
		return
	}
	if c := db.Classes[d.ClassId[:2]]; c != nil {
		for _, sc := range c.Subclasses {
			if sc.ID == d.ClassId[2:] {
				fill(&d.ClassName, sc.Name)
			}
		}
		fill(&d.ClassName, c.Name)
	}
}

// pciDBCandidates lists where a pci.ids database is looked for, in order.
func pciDBCandidates(root, explicit, env string) []string {
	var out []string
	for _, p := range []string{explicit, env} {
		if p != "" {
			out = append(out, p)
		}
	}
	for _, p := range []string{"usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"} {
		out = append(out, filepath.Join(root, p), filepath.Join(root, p+".gz"))
	}
	return out
}

// loadPCIDB loads the first pci.ids database found, or returns nil: PCI
// names are optional, and pcidb is never allowed to fetch one from the
// network.
func (c *collector) loadPCIDB() *pcidb.PCIDB {
	for _, p := range pciDBCandidates(c.root, c.cfg.pcidb, os.Getenv("PCIDB_PATH")) {
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			if p == c.cfg.pcidb {
				c.log.Warn("pci.ids database given by WithPCIDB is not readable", "path", p, "err", err)
			}
			continue
		}
		db, err := loadPCIDBFile(p)
		if err != nil {
			c.log.Warn("loading pci.ids database", "path", p, "err", err)
			continue
		}
		c.log.Debug("loaded pci.ids database", "path", p)
		return db
	}
	c.log.Info("no pci.ids database found; PCI devices and GPUs carry ids only")
	return nil
}

// loadPCIDBFile parses one pci.ids file. pcidb indexes lines without
// checking their length and panics on a truncated or corrupt file; that is
// turned into an error here.
func loadPCIDBFile(path string) (db *pcidb.PCIDB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("parsing %s: malformed pci.ids: %v", path, r)
		}
	}()
	return pcidb.New(pcidb.WithPath(path))
}
