package inventory

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Values of anvilv1.Disk.Controller.
const (
	controllerNVMe    = "nvme"
	controllerSCSI    = "scsi"
	controllerATA     = "ata"
	controllerVirtio  = "virtio"
	controllerLoop    = "loop"
	controllerUSB     = "usb"
	controllerMMC     = "mmc"
	controllerUnknown = "unknown"
)

// DiskFromSysfs reads what sysfs knows about the block device name ("sda",
// "nvme0n1") on the running machine, without udev: size, block sizes,
// rotational, removable, controller type, vendor, model, serial, WWN, a
// udev-style bus path (ID_PATH) and its kind (disk, virtual or optical; see
// [BlockKind]).
func DiskFromSysfs(name string) (*anvilv1.Disk, error) {
	return diskFromSysfs(liveRoot, name)
}

func diskFromSysfs(root, name string) (*anvilv1.Disk, error) {
	blk := filepath.Join(root, "sys", "block", name)
	real, err := resolveLink(blk)
	if err != nil {
		return nil, errAttr(blk, err)
	}
	rel := devicesRel(root, real)
	kind, err := blockKind(root, name)
	if err != nil {
		return nil, err
	}
	dev := filepath.Join(blk, "device")
	d := &anvilv1.Disk{
		Name:              name,
		Path:              "/dev/" + name,
		SizeBytes:         readUint(filepath.Join(blk, "size")) * 512,
		Rotational:        readAttr(filepath.Join(blk, "queue", "rotational")) == "1",
		Removable:         readAttr(filepath.Join(blk, "removable")) == "1",
		LogicalBlockSize:  uint32(readUint(filepath.Join(blk, "queue", "logical_block_size"))),
		PhysicalBlockSize: uint32(readUint(filepath.Join(blk, "queue", "physical_block_size"))),
		Kind:              kind,
	}
	_, vpd89Err := os.Stat(filepath.Join(dev, "vpd_pg89"))
	d.Controller = diskController(name, rel, vpd89Err == nil)
	switch d.Controller {
	case controllerNVMe:
		// device is the controller (or, with native multipath, the
		// subsystem); wwid belongs to the namespace.
		d.Model = readAttr(filepath.Join(dev, "model"))
		d.Serial = readAttr(filepath.Join(dev, "serial"))
		d.Wwn = readAttr(filepath.Join(blk, "wwid"))
	case controllerVirtio:
		d.Serial = readAttr(filepath.Join(blk, "serial"))
	case controllerSCSI, controllerATA, controllerUSB:
		d.Vendor = readAttr(filepath.Join(dev, "vendor"))
		d.Model = readAttr(filepath.Join(dev, "model"))
		if b, err := os.ReadFile(filepath.Join(dev, "vpd_pg80")); err == nil {
			d.Serial = unitSerialFromVPD(b)
		}
		d.Wwn = wwnFromSCSIWWID(readAttr(filepath.Join(dev, "wwid")))
	case controllerMMC:
		d.Model = readAttr(filepath.Join(dev, "name"))
		d.Serial = readAttr(filepath.Join(dev, "serial"))
	}
	d.BusPath = busPath(root, real, rel)
	return d, nil
}

// diskController derives the controller type from the kernel name and the
// device's sysfs path below /sys/devices. An sd* device is ATA when libata
// provides the ATA Information VPD page (vpd_pg89, which only the SCSI/ATA
// translation layer has) or sits below an ataN port, USB when it sits below
// a USB device, and SCSI otherwise.
func diskController(name, rel string, hasVPD89 bool) string {
	switch {
	case strings.HasPrefix(name, "nvme"):
		return controllerNVMe
	case strings.HasPrefix(name, "vd"):
		return controllerVirtio
	case strings.HasPrefix(name, "loop"):
		return controllerLoop
	case strings.HasPrefix(name, "mmcblk"):
		return controllerMMC
	case strings.HasPrefix(name, "hd"):
		return controllerATA
	case strings.HasPrefix(name, "sd"), strings.HasPrefix(name, "sr"):
		elems := strings.Split(rel, "/")
		for _, e := range elems {
			if _, ok := hasNumberSuffix(e, "usb"); ok {
				return controllerUSB
			}
		}
		if hasVPD89 {
			return controllerATA
		}
		for _, e := range elems {
			if _, ok := hasNumberSuffix(e, "ata"); ok {
				return controllerATA
			}
		}
		return controllerSCSI
	}
	return controllerUnknown
}

// unitSerialFromVPD returns the product serial number from a SCSI Unit
// Serial Number VPD page (page code 0x80, SPC-4 7.8.16): a 4-byte header
// whose bytes 2-3 are the length of the ASCII serial that follows.
func unitSerialFromVPD(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	b = b[4:]
	if n < len(b) {
		b = b[:n]
	}
	return strings.Trim(string(b), " \x00")
}

// wwnFromSCSIWWID turns the kernel's wwid attribute of a SCSI device (the
// best VPD page 0x83 designator, e.g. "naa.5000C500A1B2C3D4") into the form
// udev uses for ID_WWN ("0x5000c500a1b2c3d4"). Only NAA and EUI-64
// designators are world wide names; T10 vendor ids and names are not.
func wwnFromSCSIWWID(wwid string) string {
	for _, p := range []string{"naa.", "eui."} {
		if rest, ok := strings.CutPrefix(wwid, p); ok && rest != "" {
			for _, r := range rest {
				if !isHex(r) {
					return ""
				}
			}
			return "0x" + strings.ToLower(rest)
		}
	}
	return ""
}

// busPath builds a persistent bus path in the style of udev's ID_PATH
// (path_id) from a block device's sysfs path: the PCI function closest to
// the device, then the transport below it. Examples:
//
//	pci-0000:00:04.0-nvme-1
//	pci-0000:00:1f.2-ata-1
//	pci-0000:00:06.0-scsi-0:0:0:0
//	pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0
//	pci-0000:00:05.0            (virtio-blk)
//
// ATA ports use the "ata-N" form (udev's ID_PATH_ATA_COMPAT). Devices with no
// PCI ancestor (loop, zram, device-mapper) have no bus path.
func busPath(root, real, rel string) string {
	elems := strings.Split(rel, "/")
	pciAt := -1
	for i, e := range elems {
		if isPCIAddress(e) {
			pciAt = i
		}
	}
	if pciAt < 0 {
		return ""
	}
	parts := []string{"pci-" + elems[pciAt]}
	ata := false
	for i := pciAt + 1; i < len(elems); i++ {
		e := elems[i]
		if n, ok := hasNumberSuffix(e, "ata"); ok {
			parts = append(parts, "ata-"+strconv.Itoa(n))
			ata = true
			continue
		}
		if port, ok := usbInterfacePort(e); ok {
			parts = append(parts, "usb-0:"+port)
			continue
		}
		if hctl, ok := parseHCTL(e); ok && !ata {
			// udev numbers SCSI hosts from the lowest host of the
			// same parent (.../hostN/targetN:c:t/N:c:t:l), so the
			// first disk of an HBA is on host 0.
			if i >= 2 {
				parent := filepath.Join(root, "sys", "devices", filepath.Join(elems[:i-2]...))
				hctl[0] -= lowestSCSIHost(parent, hctl[0])
			}
			parts = append(parts, "scsi-"+strconv.Itoa(hctl[0])+":"+strconv.Itoa(hctl[1])+":"+
				strconv.Itoa(hctl[2])+":"+strconv.Itoa(hctl[3]))
			continue
		}
		if _, ok := hasNumberSuffix(e, "nvme"); ok && i+1 < len(elems) {
			// nvme/nvme0/nvme0n1: the namespace id follows the
			// controller; prefer the nsid attribute.
			ns := elems[i+1]
			nsid := readAttr(filepath.Join(real, "nsid"))
			if nsid == "" {
				if _, after, ok := strings.Cut(strings.TrimPrefix(ns, e), "n"); ok {
					nsid = after
				}
			}
			if nsid != "" {
				parts = append(parts, "nvme-"+nsid)
			}
			break
		}
	}
	return strings.Join(parts, "-")
}

// usbInterfacePort returns the port part of a USB interface name such as
// "1-1.2:1.0" ("1.2:1.0" → udev writes "usb-0:1.2:1.0").
func usbInterfacePort(e string) (string, bool) {
	bus, rest, ok := strings.Cut(e, "-")
	if !ok || !strings.Contains(rest, ":") {
		return "", false
	}
	if _, err := strconv.Atoi(bus); err != nil {
		return "", false
	}
	for _, r := range rest {
		if (r < '0' || r > '9') && r != '.' && r != ':' {
			return "", false
		}
	}
	return rest, true
}

// parseHCTL parses a SCSI device name "host:channel:target:lun".
func parseHCTL(e string) ([4]int, bool) {
	var out [4]int
	f := strings.Split(e, ":")
	if len(f) != 4 {
		return out, false
	}
	for i, s := range f {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// lowestSCSIHost returns the lowest N of the hostN entries in dir, or
// fallback when dir cannot be read.
func lowestSCSIHost(dir string, fallback int) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fallback
	}
	lowest := fallback
	for _, e := range entries {
		if n, ok := hasNumberSuffix(e.Name(), "host"); ok && n < lowest {
			lowest = n
		}
	}
	return lowest
}

// LoopBackingFile returns the backing file of loop device name on the
// running machine, or "" when it has none.
func LoopBackingFile(name string) (string, error) {
	return loopBackingFile(liveRoot, name)
}

func loopBackingFile(root, name string) (string, error) {
	path := filepath.Join(root, "sys", "block", name, "loop", "backing_file")
	b, err := os.ReadFile(path)
	if isNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", errAttr(path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
