package inventory

import (
	"path/filepath"
	"strconv"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// NICFromSysfs reads what sysfs knows about network interface name on the
// running machine: permanent MAC address, driver, speed, link state, MTU,
// PCI address and whether it is virtual.
func NICFromSysfs(name string) (*anvilv1.NIC, error) {
	return nicFromSysfs(liveRoot, name)
}

func nicFromSysfs(root, name string) (*anvilv1.NIC, error) {
	dir := filepath.Join(root, "sys", "class", "net", name)
	real, err := resolveLink(dir)
	if err != nil {
		return nil, errAttr(dir, err)
	}
	n := &anvilv1.NIC{
		Name:      name,
		Virtual:   strings.HasPrefix(devicesRel(root, real), "virtual/"),
		Driver:    linkBase(filepath.Join(dir, "device", "driver")),
		SpeedMbps: speedMbps(readAttr(filepath.Join(dir, "speed"))),
		LinkUp:    sysfsLinkUp(readAttr(filepath.Join(dir, "operstate")), readAttr(filepath.Join(dir, "carrier"))),
		Mtu:       uint32(readUint(filepath.Join(dir, "mtu"))),
	}
	// addr_assign_type 0 (NET_ADDR_PERM) is the hardware's own address;
	// random, stolen and user-set addresses are not stable keys.
	if readAttr(filepath.Join(dir, "addr_assign_type")) == "0" {
		n.Mac = strings.ToLower(readAttr(filepath.Join(dir, "address")))
	}
	// Resolve device from the real directory: a relative link cannot be
	// resolved lexically through the /sys/class/net/IF symlink.
	if dev, err := resolveLink(filepath.Join(real, "device")); err == nil {
		n.PciAddress = nicPCIAddress(devicesRel(root, dev))
	}
	return n, nil
}

// nicPCIAddress returns the PCI function of a netdev's parent device, given
// the parent's path below /sys/devices: the device itself when it is a PCI
// function, its parent when it is a virtio device on virtio-pci. USB and
// platform devices have none.
func nicPCIAddress(rel string) string {
	elems := strings.Split(rel, "/")
	last := elems[len(elems)-1]
	if isPCIAddress(last) {
		return last
	}
	if _, ok := hasNumberSuffix(last, "virtio"); ok && len(elems) >= 2 && isPCIAddress(elems[len(elems)-2]) {
		return elems[len(elems)-2]
	}
	return ""
}

// speedMbps parses /sys/class/net/IF/speed: -1 (unknown, e.g. virtio
// without a configured speed) and absent (link down) are 0.
func speedMbps(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// sysfsLinkUp decides the link state from operstate (RFC 2863 ifOperStatus)
// and carrier: up when the interface is operationally up or has carrier.
func sysfsLinkUp(operstate, carrier string) bool {
	return operstate == "up" || carrier == "1"
}

// linkState is what rtnetlink reports about an interface.
type linkState struct {
	up      bool
	mtu     uint32
	permMAC string
}
