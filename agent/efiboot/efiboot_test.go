package efiboot

import (
	"strings"
	"testing"

	efi "github.com/canonical/go-efilib"
)

func pxe(mac byte) *efi.LoadOption {
	return &efi.LoadOption{Attributes: efi.LoadOptionActive, Description: "UEFI PXEv4", FilePath: efi.DevicePath{
		&efi.ACPIDevicePathNode{HID: 0x0a0341d0},
		&efi.PCIDevicePathNode{Function: 0, Device: 2},
		&efi.MACAddrDevicePathNode{MACAddress: efi.EUI48{0x52, 0x54, 0, 0, 0, mac}, IfType: 1},
		&efi.IPv4DevicePathNode{},
	}}
}

func pxe6() *efi.LoadOption {
	o := pxe(1)
	o.Description = "UEFI PXEv6"
	o.FilePath = append(o.FilePath[:3:3], &efi.IPv6DevicePathNode{})
	return o
}

func disk(desc string, guidByte byte) *efi.LoadOption {
	return &efi.LoadOption{Attributes: efi.LoadOptionActive, Description: desc, FilePath: hdPath(guidByte)}
}

func hdPath(guidByte byte) efi.DevicePath {
	return efi.DevicePath{
		&efi.HardDriveDevicePathNode{PartitionNumber: 1, PartitionStart: 2048, PartitionSize: 1 << 20,
			Signature: efi.GUIDHardDriveSignature(efi.GUID{guidByte, 1, 2, 3}), MBRType: efi.GPT},
		efi.NewFilePathDevicePathNode("EFI/BOOT/BOOTX64.EFI"),
	}
}

func app() *efi.LoadOption {
	return &efi.LoadOption{Attributes: efi.LoadOptionActive | efi.LoadOptionHidden | efi.LoadOptionCategoryApp, Description: "UiApp",
		FilePath: efi.DevicePath{&efi.GenericDevicePathNode{Type: efi.MediaDevicePath, SubType: 6, Data: make([]byte, 16)}}}
}

func TestMakePlan(t *testing.T) {
	want := Want{Description: "anvil: anvil-tiny on nvme0n1", Path: hdPath(0xaa)}
	cases := []struct {
		name      string
		st        State
		order     string
		entry     uint16
		created   bool
		write     bool
		deleted   []uint16
		network   bool
		firstCurr bool
	}{
		{
			// OVMF on a fresh machine: the blank disks before the network,
			// booted from PXEv4 (Boot0003).
			name: "fresh firmware, disks before the network",
			st: State{Current: 3, HasCurrent: true, Order: []uint16{0, 1, 2, 3, 4},
				Options: map[uint16]*efi.LoadOption{0: app(), 1: disk("UEFI QEMU NVMe Ctrl", 0x11), 2: disk("UEFI Misc Device", 0x22), 3: pxe(1), 4: pxe6()}},
			order: "0003,0005,0000,0001,0002,0004", entry: 5, created: true, write: true, network: true,
		},
		{
			name: "already as wanted: nothing changes",
			st: State{Current: 3, HasCurrent: true, Order: []uint16{3, 5, 0, 1},
				Options: map[uint16]*efi.LoadOption{0: app(), 1: disk("UEFI QEMU NVMe Ctrl", 0x11), 3: pxe(1), 5: disk(want.Description, 0xaa)}},
			order: "0003,0005,0000,0001", entry: 5, network: true,
		},
		{
			name: "reinstall: the old anvil entry of another partition is deleted, the same path reused with a new description",
			st: State{Current: 3, HasCurrent: true, Order: []uint16{3, 7, 6, 0},
				Options: map[uint16]*efi.LoadOption{0: app(), 3: pxe(1), 6: disk("anvil: debian-12 on nvme0n1", 0xaa), 7: disk("anvil: old on nvme0n1", 0xbb)}},
			order: "0003,0006,0000", entry: 6, write: true, deleted: []uint16{7}, network: true,
		},
		{
			name: "no BootCurrent: the first network entry of BootOrder",
			st: State{Order: []uint16{1, 4, 3},
				Options: map[uint16]*efi.LoadOption{1: disk("UEFI QEMU NVMe Ctrl", 0x11), 3: pxe(1), 4: pxe6()}},
			order: "0004,0000,0001,0003", entry: 0, created: true, write: true, network: true,
		},
		{
			name: "BootCurrent was a disk (booted by the BMC's override): the first network entry",
			st: State{Current: 1, HasCurrent: true, Order: []uint16{1, 3},
				Options: map[uint16]*efi.LoadOption{1: disk("UEFI QEMU NVMe Ctrl", 0x11), 3: pxe(1)}},
			order: "0003,0000,0001", entry: 0, created: true, write: true, network: true,
		},
		{
			name: "no network entry at all: the disk first, said so",
			st: State{Current: 1, HasCurrent: true, Order: []uint16{1},
				Options: map[uint16]*efi.LoadOption{1: disk("UEFI QEMU NVMe Ctrl", 0x11)}},
			order: "0000,0001", entry: 0, created: true, write: true,
		},
		{
			name: "BootOrder names entries that do not exist: kept in place",
			st: State{Current: 3, HasCurrent: true, Order: []uint16{9, 3},
				Options: map[uint16]*efi.LoadOption{3: pxe(1)}},
			order: "0003,0000,0009", entry: 0, created: true, write: true, network: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := MakePlan(c.st, want)
			if err != nil {
				t.Fatal(err)
			}
			if got := FormatOrder(p.Order); got != c.order {
				t.Errorf("order %s, want %s", got, c.order)
			}
			if p.Entry != c.entry || p.Created != c.created || (p.Write != nil) != c.write || p.HasNetwork != c.network {
				t.Errorf("entry %04X created %v write %v network %v, want %04X %v %v %v", p.Entry, p.Created, p.Write != nil, p.HasNetwork, c.entry, c.created, c.write, c.network)
			}
			if FormatOrder(p.Delete) != FormatOrder(c.deleted) {
				t.Errorf("deleted %s, want %s", FormatOrder(p.Delete), FormatOrder(c.deleted))
			}
			if c.write && (p.Write.Description != want.Description || p.Write.Attributes != efi.LoadOptionActive) {
				t.Errorf("writes %v", p.Write)
			}
			if !c.write && !c.created && len(c.deleted) == 0 && p.Changed() {
				t.Errorf("a plan with nothing to do changes something: %+v", p)
			}
			d := p.Describe(c.st, want)
			if !strings.HasPrefix(d, "UEFI: ") || !strings.Contains(d, "Boot"+strings.ToUpper(FormatOrder([]uint16{c.entry}))) {
				t.Errorf("description %q", d)
			}
			if !c.network && !strings.Contains(d, "no network entry") {
				t.Errorf("description %q does not say there is no network entry", d)
			}
		})
	}
	if _, err := MakePlan(State{}, Want{Description: "no prefix", Path: hdPath(1)}); err == nil {
		t.Error("a description without the anvil prefix was accepted")
	}
}

func TestIsNetwork(t *testing.T) {
	uri := &efi.LoadOption{FilePath: efi.DevicePath{&efi.GenericDevicePathNode{Type: efi.MessagingDevicePath, SubType: 24, Data: []byte("http://x/")}}}
	for _, c := range []struct {
		o    *efi.LoadOption
		want bool
	}{{pxe(1), true}, {pxe6(), true}, {uri, true}, {disk("d", 1), false}, {app(), false}, {nil, false}} {
		if got := IsNetwork(c.o); got != c.want {
			t.Errorf("IsNetwork(%v) = %v", c.o, got)
		}
	}
}
