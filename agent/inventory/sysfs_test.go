package inventory

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// TestDiskFromSysfs reads every disk of machine-a through sysfs alone (no
// ghw, no udev): sdb shows what the agent sees in the initramfs, where udev
// data is absent.
func TestDiskFromSysfs(t *testing.T) {
	tests := []*anvilv1.Disk{
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Model: "QEMU NVMe Ctrl", Serial: "NVME0001", Wwn: "eui.525400000000abcd",
			SizeBytes: 1 << 30, Controller: "nvme", PhysicalBlockSize: 512, LogicalBlockSize: 512, BusPath: "pci-0000:00:04.0-nvme-1", Kind: "disk"},
		{Name: "vda", Path: "/dev/vda", Serial: "VDA-SERIAL-1", SizeBytes: 2 << 30, Rotational: true,
			Controller: "virtio", PhysicalBlockSize: 512, LogicalBlockSize: 512, BusPath: "pci-0000:00:05.0", Kind: "disk"},
		{Name: "sda", Path: "/dev/sda", Vendor: "QEMU", Model: "QEMU HARDDISK", Serial: "SCSI-SERIAL1", Wwn: "0x5000c50015ea71ac",
			SizeBytes: 4 << 30, Rotational: true, Controller: "scsi", PhysicalBlockSize: 4096, LogicalBlockSize: 512,
			BusPath: "pci-0000:00:06.0-scsi-0:0:0:0", Kind: "disk"},
		// The SCSI INQUIRY model is cut at 16 characters.
		{Name: "sdb", Path: "/dev/sdb", Vendor: "ATA", Model: "Samsung SSD 870", Serial: "S5Y1NX0R123456A", Wwn: "0x5002538e40a1b2c3",
			SizeBytes: 8 << 30, Controller: "ata", PhysicalBlockSize: 512, LogicalBlockSize: 512, BusPath: "pci-0000:00:1f.2-ata-1", Kind: "disk"},
		{Name: "loop0", Path: "/dev/loop0", SizeBytes: 512 << 20, Controller: "loop", PhysicalBlockSize: 512, LogicalBlockSize: 512, Kind: "virtual"},
		{Name: "zram0", Path: "/dev/zram0", SizeBytes: 512 << 20, Controller: "unknown", PhysicalBlockSize: 4096, LogicalBlockSize: 4096, Kind: "virtual"},
	}
	for _, want := range tests {
		t.Run(want.Name, func(t *testing.T) {
			got, err := diskFromSysfs(machineA, want.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
	if _, err := diskFromSysfs(machineA, "sdz"); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing disk: err = %v, want not-exist", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestDiskController(t *testing.T) {
	tests := []struct {
		name, rel string
		vpd89     bool
		want      string
	}{
		{"nvme0n1", "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1", false, "nvme"},
		{"vda", "pci0000:00/0000:00:05.0/virtio1/block/vda", false, "virtio"},
		{"loop3", "virtual/block/loop3", false, "loop"},
		{"mmcblk0", "platform/fe320000.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk0", false, "mmc"},
		{"hda", "pci0000:00/0000:00:01.1/ide0/0.0/block/hda", false, "ata"},
		{"sda", "pci0000:00/0000:00:06.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda", false, "scsi"},
		{"sda", "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", false, "ata"},
		// SATA behind a SAS HBA: only the ATA VPD page tells.
		{"sdb", "pci0000:00/0000:00:03.0/0000:03:00.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0/block/sdb", true, "ata"},
		{"sdc", "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc", true, "usb"},
		{"sr0", "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sr0", false, "ata"},
		{"dm-0", "virtual/block/dm-0", false, "unknown"},
		{"sdata", "pci0000:00/0000:00:06.0/virtio2/host0/target0:0:0/0:0:0:0/block/sdata", false, "scsi"},
	}
	for _, tt := range tests {
		if got := diskController(tt.name, tt.rel, tt.vpd89); got != tt.want {
			t.Errorf("diskController(%q, %q, %v) = %q, want %q", tt.name, tt.rel, tt.vpd89, got, tt.want)
		}
	}
}

func TestBusPath(t *testing.T) {
	root := t.TempDir()
	// Two hosts on one USB interface: udev numbers them from 0.
	for _, h := range []string{"host6", "host7"} {
		if err := os.MkdirAll(filepath.Join(root, "sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0", h), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ rel, want string }{
		{"pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host7/target7:0:0/7:0:0:2/block/sdc", "pci-0000:00:14.0-usb-0:1:1.0-scsi-1:0:0:2"},
		{"pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme1/nvme1n3", "pci-0000:01:00.0-nvme-3"},
		{"pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb", "pci-0000:00:1f.2-ata-3"},
		{"virtual/block/loop0", ""},
		{"platform/fe320000.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk0", ""},
	}
	for _, tt := range tests {
		real := filepath.Join(root, "sys/devices", tt.rel)
		if got := busPath(root, real, tt.rel); got != tt.want {
			t.Errorf("busPath(%q) = %q, want %q", tt.rel, got, tt.want)
		}
	}
}

func TestUnitSerialFromVPD(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{[]byte("\x00\x80\x00\x0cSCSI-SERIAL1"), "SCSI-SERIAL1"},
		{[]byte("\x00\x80\x00\x14S5Y1NX0R123456A     "), "S5Y1NX0R123456A"},
		{[]byte("\x00\x80\x00\x04ABCDEFGH"), "ABCD"},     // length bounds the serial
		{[]byte("\x00\x80\x00\xffABC"), "ABC"},           // length beyond the data
		{[]byte("\x00\x83\x00\x04ABCD"), ""},             // not page 0x80
		{[]byte("\x00\x80"), ""},                         // truncated header
		{[]byte("\x00\x80\x00\x08  \x00XY\x00  "), "XY"}, // padding
	}
	for _, tt := range tests {
		if got := unitSerialFromVPD(tt.in); got != tt.want {
			t.Errorf("unitSerialFromVPD(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWWNFromSCSIWWID(t *testing.T) {
	tests := map[string]string{
		"naa.5000C50015EA71AC":                 "0x5000c50015ea71ac",
		"naa.600508b1001c7e172f0d1dc5d1d4ab3c": "0x600508b1001c7e172f0d1dc5d1d4ab3c",
		"eui.0025385B71B07E2F":                 "0x0025385b71b07e2f",
		"t10.ATA     QEMU HARDDISK   QM00001":  "",
		"naa.":                                 "",
		"naa.50zz":                             "",
		"":                                     "",
	}
	for in, want := range tests {
		if got := wwnFromSCSIWWID(in); got != want {
			t.Errorf("wwnFromSCSIWWID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoopBackingFile(t *testing.T) {
	for name, want := range map[string]string{"loop0": "/var/lib/anvil/disk0.img", "loop1": "", "vda": ""} {
		got, err := loopBackingFile(machineA, name)
		if err != nil || got != want {
			t.Errorf("loopBackingFile(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestNICFromSysfs(t *testing.T) {
	tests := []*anvilv1.NIC{
		{Name: "eth0", Mac: "52:54:00:12:34:56", Driver: "virtio_net", SpeedMbps: 10000, LinkUp: true, PciAddress: "0000:00:03.0", Mtu: 1500},
		{Name: "enp0s7", Mac: "52:54:00:ab:cd:ef", Driver: "e1000e", PciAddress: "0000:00:07.0", Mtu: 9000},
		// addr_assign_type 3 (set by userspace): not a hardware address.
		{Name: "br0", Virtual: true, Mtu: 1500},
		{Name: "lo", Mac: "00:00:00:00:00:00", LinkUp: true, Virtual: true, Mtu: 65536},
	}
	for _, want := range tests {
		got, err := nicFromSysfs(machineA, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("got  %v\nwant %v", got, want)
		}
	}
	if _, err := nicFromSysfs(machineA, "eth9"); err == nil {
		t.Error("missing NIC: no error")
	}
}

func TestNICPCIAddress(t *testing.T) {
	tests := map[string]string{
		"pci0000:00/0000:00:07.0":                  "0000:00:07.0",
		"pci0000:00/0000:00:03.0/virtio0":          "0000:00:03.0",
		"pci0000:00/0000:00:01.0/0000:01:00.1":     "0000:01:00.1",
		"pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0": "", // USB NIC: not the xHCI's address
		"platform/ff540000.ethernet":               "",
		"":                                         "",
	}
	for rel, want := range tests {
		if got := nicPCIAddress(rel); got != want {
			t.Errorf("nicPCIAddress(%q) = %q, want %q", rel, got, want)
		}
	}
}

func TestSpeedAndLink(t *testing.T) {
	for in, want := range map[string]int64{"10000": 10000, "1000": 1000, "-1": 0, "": 0, "4294967295": 4294967295, "x": 0} {
		if got := speedMbps(in); got != want {
			t.Errorf("speedMbps(%q) = %d, want %d", in, got, want)
		}
	}
	tests := []struct {
		oper, carrier string
		want          bool
	}{
		{"up", "1", true},
		{"up", "", true},
		{"unknown", "1", true}, // e.g. tun: no operstate, but carrier
		{"down", "0", false},
		{"down", "", false}, // carrier of a down interface reads EINVAL
		{"dormant", "0", false},
	}
	for _, tt := range tests {
		if got := sysfsLinkUp(tt.oper, tt.carrier); got != tt.want {
			t.Errorf("sysfsLinkUp(%q, %q) = %v, want %v", tt.oper, tt.carrier, got, tt.want)
		}
	}
}

func TestPCIDevicesFromSysfs(t *testing.T) {
	devs, err := pciDevicesFromSysfs(machineA)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, d := range devs {
		addrs = append(addrs, d.GetAddress())
	}
	wantAddrs := []string{"0000:00:00.0", "0000:00:01.0", "0000:00:02.0", "0000:00:03.0", "0000:00:04.0",
		"0000:00:05.0", "0000:00:06.0", "0000:00:07.0", "0000:00:1f.2", "0000:01:00.0"}
	if !slices.Equal(addrs, wantAddrs) {
		t.Fatalf("addresses = %v, want %v", addrs, wantAddrs)
	}
	want := &anvilv1.PCIDevice{Address: "0000:00:04.0", VendorId: "1b36", ProductId: "0010", ClassId: "0108", Driver: "nvme"}
	if devs[4].String() != want.String() {
		t.Errorf("got %v, want %v", devs[4], want)
	}

	// A machine without PCI (or a snapshot with only modalias).
	if devs, err := pciDevicesFromSysfs(t.TempDir()); err != nil || len(devs) != 0 {
		t.Errorf("no PCI bus: %v, %v", devs, err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "sys/bus/pci/devices/0000:00:1f.3")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modalias"), []byte("pci:v00008086d000051C8sv00001028sd00000B1Dbc04sc03i80\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	devs, err = pciDevicesFromSysfs(root)
	want = &anvilv1.PCIDevice{Address: "0000:00:1f.3", VendorId: "8086", ProductId: "51c8", ClassId: "0403"}
	if err != nil || len(devs) != 1 || devs[0].String() != want.String() {
		t.Errorf("from modalias: %v, %v; want %v", devs, err, want)
	}
}

func TestCanonicalUUID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"6F1C3B2A-9D4E-4B7A-8C21-0123456789AB", "6f1c3b2a-9d4e-4b7a-8c21-0123456789ab"},
		{"  4c4c4544-0042-3510-8052-b7c04f4e3232\n", "4c4c4544-0042-3510-8052-b7c04f4e3232"},
		{"6F1C3B2A9D4E4B7A8C210123456789AB", "6f1c3b2a-9d4e-4b7a-8c21-0123456789ab"},
		{"00000000-0000-0000-0000-000000000000", ""}, // present but not set
		{"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", ""}, // not present
		{"unknown", ""},
		{"", ""},
		{"6F1C3B2A-9D4E-4B7A-8C21-0123456789AG", ""},
		{"6F1C3B2A9-D4E-4B7A-8C21-0123456789AB", ""},
		{"{6F1C3B2A-9D4E-4B7A-8C21-0123456789AB}", ""},
	}
	for _, tt := range tests {
		got, err := canonicalUUID(tt.in)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("canonicalUUID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestPCIDBCandidates(t *testing.T) {
	got := pciDBCandidates("/r", "/x/pci.ids", "/env/pci.ids")
	want := []string{"/x/pci.ids", "/env/pci.ids",
		"/r/usr/share/misc/pci.ids", "/r/usr/share/misc/pci.ids.gz",
		"/r/usr/share/hwdata/pci.ids", "/r/usr/share/hwdata/pci.ids.gz"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestIsPCIAddress(t *testing.T) {
	for in, want := range map[string]bool{
		"0000:00:1f.2": true, "0000:0a:00.0": true, "10000:00:00.0": false, "0000:00:00.8": false,
		"pci0000:00": false, "0000:00:1g.2": false, "0:0:0:0": false,
	} {
		if got := isPCIAddress(in); got != want {
			t.Errorf("isPCIAddress(%q) = %v, want %v", in, got, want)
		}
	}
}
