package main

import (
	"fmt"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Sizes of the simulated server's inventory: a storage server's disks, a
// few dual-port NICs, and the PCI functions lspci lists on a two-socket
// machine (root ports, bridges, every NIC and NVMe function, chipset).
const (
	invDisks = 24
	invNICs  = 8
	invPCI   = 120
)

// inventory is agent i's inventory: a real server's size, deterministic in
// (uuid, i), so that both servers under test receive the same bytes. MACs
// and serials are unique per agent.
func inventory(uuid string, i int) *anvilv1.Inventory {
	inv := &anvilv1.Inventory{
		Cpu:       &anvilv1.CPU{Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Sockets: 2, Cores: 64, Threads: 128},
		Memory:    &anvilv1.Memory{TotalBytes: 512 << 30, UsableBytes: 503 << 30},
		Bios:      &anvilv1.BIOS{Vendor: "American Megatrends International, LLC.", Version: "2.1a", Date: "06/14/2023"},
		Baseboard: &anvilv1.Baseboard{Vendor: "Supermicro", Product: "X12DPU-6", Serial: fmt.Sprintf("WM22AS%06d", i), Version: "1.01"},
		Chassis:   &anvilv1.Chassis{Vendor: "Supermicro", Type: "Rack Mount Chassis", Serial: fmt.Sprintf("C1160LL%06d", i)},
		Product: &anvilv1.Product{Vendor: "Supermicro", Name: "SYS-120U-TNR", Uuid: uuid, Serial: fmt.Sprintf("S%08d", i),
			Sku: "To be filled by O.E.M.", Family: "Ultra"},
		Bmc: &anvilv1.BMC{Channel: 1, Ip: fmt.Sprintf("10.%d.%d.%d", 100+i>>16&0x3f, i>>8&0xff, i&0xff), IpSource: "dhcp", Netmask: "255.255.0.0",
			Gateway: "10.100.0.1", Mac: mac(i, 0xfe), Firmware: "1.74", IpmiVersion: "2.0", ManufacturerId: 10876, ProductId: 6929},
	}
	for k := range invDisks {
		d := &anvilv1.Disk{Name: fmt.Sprintf("sd%c", 'a'+k), Path: fmt.Sprintf("/dev/sd%c", 'a'+k), Vendor: "ATA", Model: "ST16000NM001G-2KK103",
			Serial: fmt.Sprintf("ZL2%05d%03d", i, k), Wwn: fmt.Sprintf("0x5000c500%08x", i<<5|k), SizeBytes: 16 << 40, Rotational: true,
			Controller: "scsi", PhysicalBlockSize: 4096, LogicalBlockSize: 512, Kind: "disk",
			BusPath: fmt.Sprintf("pci-0000:5e:00.0-sas-exp0x500304801f3b7cff-phy%d-lun-0", k)}
		if k < 2 {
			d.Name, d.Path, d.Vendor, d.Model, d.Controller, d.Rotational, d.SizeBytes = fmt.Sprintf("nvme%dn1", k), fmt.Sprintf("/dev/nvme%dn1", k),
				"", "SAMSUNG MZQL2960HCJR-00A07", "nvme", false, 960<<30
			d.BusPath = fmt.Sprintf("pci-0000:%02x:00.0-nvme-1", 0x31+k)
		}
		inv.Disks = append(inv.Disks, d)
	}
	for k := range invNICs {
		inv.Nics = append(inv.Nics, &anvilv1.NIC{Name: fmt.Sprintf("ens%df%d", 1+k/2, k%2), Mac: mac(i, k), Driver: "ice", SpeedMbps: 25000,
			LinkUp: k%2 == 0, PciAddress: fmt.Sprintf("0000:%02x:00.%d", 0x17+k/2, k%2), Mtu: 9000,
			LldpNeighbors: []*anvilv1.LLDPNeighbor{{ChassisId: fmt.Sprintf("b8:59:9f:%02x:%02x:00", k, i&0xff), ChassisIdSubtype: "mac",
				PortId: fmt.Sprintf("Ethernet%d/%d", 1+i%48, 1+k), PortIdSubtype: "interface-name", PortDescription: fmt.Sprintf("rack%03d-u%02d", i/40, i%40),
				SystemName: fmt.Sprintf("leaf%03d-%c", i/40, 'a'+k%2), SystemDescription: "SONiC Software Version: SONiC.202305.1 - HwSku: Mellanox-SN3700",
				Vlan: 100, ManagementAddresses: []string{fmt.Sprintf("10.0.%d.%d", i/40/250, i/40%250)}, TtlSeconds: 120}}})
	}
	for k := range invPCI {
		inv.PciDevices = append(inv.PciDevices, &anvilv1.PCIDevice{Address: fmt.Sprintf("0000:%02x:%02x.%d", k/16, k%16, k%8),
			VendorId: "8086", Vendor: "Intel Corporation", ProductId: fmt.Sprintf("%04x", 0x09a2+k),
			Product: "Ice Lake Memory Map/VT-d / PCI Express Root Port", ClassId: "0604", ClassName: "PCI bridge", Driver: "pcieport"})
	}
	inv.Gpus = []*anvilv1.GPU{{Address: "0000:03:00.0", Vendor: "ASPEED Technology, Inc.", Model: "ASPEED Graphics Family", Driver: "ast"}}
	return inv
}

// mac is NIC k's MAC address on agent i (locally administered, unique).
func mac(i, k int) string {
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff, k&0xff)
}
