package inventory

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// TestCollectGolden runs Collect on the fixtures shipped in testdata/ and
// compares the whole inventory with its golden file.
func TestCollectGolden(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	tests := []struct {
		name   string
		opts   []Option
		golden string
	}{
		// The hand-made tree: every sysfs fallback, PCI ids only.
		{"machine-a", []Option{WithRoot(machineA)}, "testdata/machine-a.golden.json"},
		// The same tree named from a pci.ids database through ghw.
		{"machine-a/pci.ids", []Option{WithRoot(machineA), WithPCIDB(testPCIIDs)}, "testdata/machine-a.pciids.golden.json"},
		// This machine (no DMI: it has no identity).
		{"host-snapshot", []Option{WithSnapshot(hostSnapshot), WithRequireUUID(false)}, "testdata/host-snapshot.golden.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := Collect(t.Context(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, inv, tt.golden)
		})
	}
}

// TestCollectMachineA spells out what the golden file of machine-a holds
// for the fields that only the sysfs fallbacks provide.
func TestCollectMachineA(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	inv, err := Collect(t.Context(), WithRoot(machineA))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := inv.GetProduct().GetUuid(), "6f1c3b2a-9d4e-4b7a-8c21-0123456789ab"; got != want {
		t.Errorf("product UUID = %q, want %q (lower-cased from sysfs)", got, want)
	}
	if got, want := inv.GetChassis().GetType(), "Main server chassis"; got != want {
		t.Errorf("chassis type = %q, want %q", got, want)
	}
	if c := inv.GetCpu(); c.GetSockets() != 1 || c.GetCores() != 2 || c.GetThreads() != 4 {
		t.Errorf("CPU = %v, want 1 socket, 2 cores, 4 threads (cpu4 is offline)", c)
	}
	if got, want := inv.GetMemory().GetTotalBytes(), uint64(8<<30); got != want {
		t.Errorf("memory total = %d, want %d", got, want)
	}

	var names []string
	disks := map[string]*anvilv1.Disk{}
	for _, d := range inv.GetDisks() {
		names = append(names, d.GetName())
		disks[d.GetName()] = d
	}
	// ram0 and zram0 are never disks; loop1 has no backing file.
	if want := []string{"loop0", "nvme0n1", "sda", "sdb", "vda"}; !slices.Equal(names, want) {
		t.Fatalf("disks = %v, want %v", names, want)
	}
	type diskWant struct{ controller, vendor, model, serial, wwn, bus, kind string }
	for name, w := range map[string]diskWant{
		"nvme0n1": {"nvme", "", "QEMU NVMe Ctrl", "NVME0001", "eui.525400000000abcd", "pci-0000:00:04.0-nvme-1", "disk"},
		// virtio-blk: ghw's vendor (the virtio vendor id 0x1af4) is dropped.
		"vda": {"virtio", "", "", "VDA-SERIAL-1", "", "pci-0000:00:05.0", "disk"},
		"sda": {"scsi", "QEMU", "QEMU HARDDISK", "SCSI-SERIAL1", "0x5000c50015ea71ac", "pci-0000:00:06.0-scsi-0:0:0:0", "disk"},
		// sdb has udev data: ghw's values win over sysfs.
		"sdb": {"ata", "ATA", "Samsung_SSD_870_EVO_1TB", "S5Y1NX0R123456A", "0x5002538e40a1b2c3", "pci-0000:00:1f.2-ata-1.0", "disk"},
		// Reported (it has a backing file), as a virtual device.
		"loop0": {"loop", "", "", "", "", "", "virtual"},
	} {
		d := disks[name]
		got := diskWant{d.GetController(), d.GetVendor(), d.GetModel(), d.GetSerial(), d.GetWwn(), d.GetBusPath(), d.GetKind()}
		if got != w {
			t.Errorf("disk %s = %+v, want %+v", name, got, w)
		}
	}
	if d := disks["sda"]; d.GetPhysicalBlockSize() != 4096 || d.GetLogicalBlockSize() != 512 || !d.GetRotational() || d.GetSizeBytes() != 4<<30 {
		t.Errorf("sda = %v, want 4 GiB, rotational, 512/4096-byte sectors", d)
	}

	nics := map[string]*anvilv1.NIC{}
	for _, n := range inv.GetNics() {
		nics[n.GetName()] = n
	}
	if _, ok := nics["lo"]; ok || len(nics) != 3 {
		t.Errorf("NICs = %v, want br0, enp0s7 and eth0 (not lo)", inv.GetNics())
	}
	type nicWant struct {
		mac, driver, pci string
		speed            int64
		up, virtual      bool
		mtu              uint32
	}
	for name, w := range map[string]nicWant{
		"eth0":   {"52:54:00:12:34:56", "virtio_net", "0000:00:03.0", 10000, true, false, 1500},
		"enp0s7": {"52:54:00:ab:cd:ef", "e1000e", "0000:00:07.0", 0, false, false, 9000},
		"br0":    {"", "", "", 0, false, true, 1500},
	} {
		n := nics[name]
		got := nicWant{n.GetMac(), n.GetDriver(), n.GetPciAddress(), n.GetSpeedMbps(), n.GetLinkUp(), n.GetVirtual(), n.GetMtu()}
		if got != w {
			t.Errorf("NIC %s = %+v, want %+v", name, got, w)
		}
	}

	// Without pci.ids: ids only, and both display controllers are GPUs
	// (00:02.0 has neither a driver nor a DRM card).
	if len(inv.GetPciDevices()) != 10 {
		t.Errorf("got %d PCI devices, want 10", len(inv.GetPciDevices()))
	}
	for _, p := range inv.GetPciDevices() {
		if p.GetVendor() != "" || p.GetProduct() != "" || p.GetClassName() != "" || p.GetVendorId() == "" {
			t.Errorf("PCI device %v: want ids and no names without pci.ids", p)
		}
	}
	wantGPUs := []*anvilv1.GPU{
		{Address: "0000:00:02.0", Vendor: "1234", Model: "1111"},
		{Address: "0000:01:00.0", Vendor: "10de", Model: "2204", Driver: "nvidia"},
	}
	if !gpusEqual(inv.GetGpus(), wantGPUs) {
		t.Errorf("GPUs = %v, want %v", inv.GetGpus(), wantGPUs)
	}
}

func gpusEqual(a, b []*anvilv1.GPU) bool {
	return slices.EqualFunc(a, b, func(x, y *anvilv1.GPU) bool {
		return x.GetAddress() == y.GetAddress() && x.GetVendor() == y.GetVendor() &&
			x.GetModel() == y.GetModel() && x.GetDriver() == y.GetDriver()
	})
}

func TestCollectPCINames(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	inv, err := Collect(t.Context(), WithRoot(machineA), WithPCIDB(testPCIIDs))
	if err != nil {
		t.Fatal(err)
	}
	var sata *anvilv1.PCIDevice
	for _, p := range inv.GetPciDevices() {
		if p.GetAddress() == "0000:00:1f.2" {
			sata = p
		}
	}
	want := &anvilv1.PCIDevice{
		Address: "0000:00:1f.2", VendorId: "8086", Vendor: "Intel Corporation", ProductId: "2922",
		Product: "82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]",
		ClassId: "0106", ClassName: "SATA controller", Driver: "ahci",
	}
	if sata.String() != want.String() {
		t.Errorf("SATA controller = %v, want %v", sata, want)
	}
	wantGPUs := []*anvilv1.GPU{
		{Address: "0000:00:02.0", Vendor: "Technical Corp.", Model: "QEMU Virtual Video Controller"},
		{Address: "0000:01:00.0", Vendor: "NVIDIA Corporation", Model: "GA102 [GeForce RTX 3090]", Driver: "nvidia"},
	}
	if !gpusEqual(inv.GetGpus(), wantGPUs) {
		t.Errorf("GPUs = %v, want %v", inv.GetGpus(), wantGPUs)
	}

	// $PCIDB_PATH is used when WithPCIDB is not given.
	t.Setenv("PCIDB_PATH", testPCIIDs)
	inv, err = Collect(t.Context(), WithRoot(machineA))
	if err != nil {
		t.Fatal(err)
	}
	if got := inv.GetPciDevices()[0].GetVendor(); got != "Intel Corporation" {
		t.Errorf("with $PCIDB_PATH: vendor of 0000:00:00.0 = %q, want Intel Corporation", got)
	}
}

// TestCollectBadPCIDB: a missing or corrupt pci.ids costs the names, never
// the inventory (pcidb itself panics on a truncated file).
func TestCollectBadPCIDB(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	corrupt := filepath.Join(t.TempDir(), "pci.ids")
	if err := os.WriteFile(corrupt, []byte("80\n\tx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{corrupt, filepath.Join(t.TempDir(), "missing.ids")} {
		var logs bytes.Buffer
		inv, err := Collect(t.Context(), WithRoot(machineA), WithPCIDB(db),
			WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err != nil {
			t.Fatalf("pci.ids %s: %v", db, err)
		}
		if len(inv.GetPciDevices()) != 10 || inv.GetPciDevices()[0].GetVendor() != "" {
			t.Errorf("pci.ids %s: PCI devices = %v, want 10 without names", db, inv.GetPciDevices())
		}
		if !strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("pci.ids %s: no warning logged:\n%s", db, logs.String())
		}
	}
}

func TestCollectGHWSnapshots(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	dir := filepath.Join(ghwModuleDir(t), "testdata", "snapshots")
	type diskWant struct {
		size       uint64
		controller string
		rotational bool
		wwn, bus   string
		kind       string
	}
	// Values read from the snapshots' proc/cpuinfo, proc/meminfo and
	// sys/devices/system/memory, and /sys/block/*/size × 512.
	tests := []struct {
		file                    string
		opts                    []Option
		vendor, model           string
		sockets, cores, threads uint32
		totalMem, usableMem     uint64
		disks                   map[string]diskWant
		nics                    []string
		gpus                    []*anvilv1.GPU
	}{
		{
			file:   "linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d.tar.gz",
			vendor: "GenuineIntel", model: "12th Gen Intel(R) Core(TM) i7-1270P",
			sockets: 1, cores: 12, threads: 16,
			totalMem: 255 * 128 << 20, usableMem: 32542668 << 10,
			disks: map[string]diskWant{
				"dm-0":    {1997047808 * 512, "unknown", false, "", "", "virtual"},
				"nvme0n1": {2000409264 * 512, "nvme", false, "eui.002538bc21b15601", "pci-0000:04:00.0-nvme-1", "disk"},
			},
			gpus: []*anvilv1.GPU{{Address: "0000:00:02.0", Vendor: "8086", Model: "46a6", Driver: "i915"}},
		},
		{
			file: "linux-amd64-61797caf7c0b6bca1725ad7975ed4773.tar.gz",
			// GPU from ghw's DRM reader, named from testdata/pci.ids.
			opts:   []Option{WithPCIDB(testPCIIDs)},
			vendor: "AuthenticAMD", model: "AMD Ryzen 5 1600 Six-Core Processor",
			sockets: 1, cores: 6, threads: 12,
			totalMem: 256 * 128 << 20, usableMem: 32777916 << 10,
			disks: map[string]diskWant{
				"dm-0": {188743680 * 512, "unknown", false, "", "", "virtual"},
				"dm-1": {33554432 * 512, "unknown", true, "", "", "virtual"},
				"dm-2": {125829120 * 512, "unknown", false, "", "", "virtual"},
				"dm-3": {27262976 * 512, "unknown", false, "", "", "virtual"},
				"dm-4": {914358272 * 512, "unknown", false, "", "", "virtual"},
				"sda":  {500118192 * 512, "ata", false, "", "pci-0000:01:00.1-ata-1", "disk"},
				"sdb":  {1953525168 * 512, "ata", true, "", "pci-0000:01:00.1-ata-5", "disk"},
				"sdc":  {976773168 * 512, "ata", false, "", "pci-0000:01:00.1-ata-6", "disk"},
			},
			// ghw's snapshots carry no MAC addresses.
			nics: []string{"enp3s0", "enp6s0f0", "enp6s0f1", "enp8s0"},
			gpus: []*anvilv1.GPU{{Address: "0000:0a:00.0", Vendor: "Advanced Micro Devices, Inc. [AMD/ATI]", Model: "Turks XT [Radeon HD 6670/7670]"}},
		},
		{
			file:   "linux-amd64-8581cf3a529e5d8b97ea876eade2f60d.tar.gz",
			vendor: "GenuineIntel", model: "Intel(R) Xeon(R) CPU           L5640  @ 2.27GHz",
			sockets: 2, cores: 12, threads: 24,
			totalMem: 33 * 2048 << 20, usableMem: 65921280 << 10,
			disks: map[string]diskWant{
				"dm-0": {67108864 * 512, "unknown", true, "", "", "virtual"},
				"dm-1": {16777216 * 512, "unknown", true, "", "", "virtual"},
				"dm-2": {25165824 * 512, "unknown", true, "", "", "virtual"},
				"dm-3": {260046848 * 512, "unknown", true, "", "", "virtual"},
				"dm-4": {167772160 * 512, "unknown", true, "", "", "virtual"},
				// A RAID HBA on host2: udev numbers hosts per HBA.
				"sda": {975699968 * 512, "scsi", true, "", "pci-0000:03:00.0-scsi-0:2:0:0", "disk"},
				"sr0": {2097151 * 512, "ata", true, "", "pci-0000:00:1f.2-ata-1", "optical"},
			},
			gpus: []*anvilv1.GPU{{Address: "0000:07:03.0", Vendor: "102b", Model: "0532", Driver: "mgag200"}},
		},
		{
			file:   "linux-amd64-accel-nvidia.tar.gz",
			vendor: "GenuineIntel", model: "Intel(R) Xeon(R) CPU E5-2695 v4 @ 2.10GHz",
			sockets: 1, cores: 8, threads: 8,
			totalMem: 239 * 128 << 20, usableMem: 30601816 << 10,
			disks: map[string]diskWant{
				"sda": {97656256 * 512, "scsi", true, "", "pci-0000:02:00.0-scsi-0:0:0:1", "disk"},
			},
			// No DRM cards in the snapshot: both come from PCI class 0x03.
			gpus: []*anvilv1.GPU{
				{Address: "0000:04:00.0", Vendor: "1af4", Model: "1050", Driver: "virtio-pci"},
				{Address: "0000:06:00.0", Vendor: "10de", Model: "15f8", Driver: "nvidia"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			opts := append([]Option{WithSnapshot(path), WithRequireUUID(false)}, tt.opts...)
			inv, err := Collect(t.Context(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			c := inv.GetCpu()
			if c.GetVendor() != tt.vendor || c.GetModel() != tt.model || c.GetSockets() != tt.sockets ||
				c.GetCores() != tt.cores || c.GetThreads() != tt.threads {
				t.Errorf("CPU = %v, want %s %q, %d sockets, %d cores, %d threads",
					c, tt.vendor, tt.model, tt.sockets, tt.cores, tt.threads)
			}
			if m := inv.GetMemory(); m.GetTotalBytes() != tt.totalMem || m.GetUsableBytes() != tt.usableMem {
				t.Errorf("memory = %v, want total %d, usable %d", m, tt.totalMem, tt.usableMem)
			}
			got := map[string]diskWant{}
			for _, d := range inv.GetDisks() {
				got[d.GetName()] = diskWant{d.GetSizeBytes(), d.GetController(), d.GetRotational(), d.GetWwn(), d.GetBusPath(), d.GetKind()}
			}
			if len(got) != len(tt.disks) {
				t.Errorf("disks = %v, want %v (zram skipped)", got, tt.disks)
			}
			for name, w := range tt.disks {
				if got[name] != w {
					t.Errorf("disk %s = %+v, want %+v", name, got[name], w)
				}
			}
			var nics []string
			for _, n := range inv.GetNics() {
				nics = append(nics, n.GetName())
			}
			if !slices.Equal(nics, tt.nics) {
				t.Errorf("NICs = %v, want %v", nics, tt.nics)
			}
			if !gpusEqual(inv.GetGpus(), tt.gpus) {
				t.Errorf("GPUs = %v, want %v", inv.GetGpus(), tt.gpus)
			}
			if len(tt.opts) == 0 {
				checkGolden(t, inv, filepath.Join("testdata", "ghw", strings.TrimSuffix(tt.file, ".tar.gz")+".golden.json"))
			}
		})
	}

	t.Run("no DMI is no identity", func(t *testing.T) {
		_, err := Collect(t.Context(), WithSnapshot(filepath.Join(dir, tests[0].file)))
		if !errors.Is(err, ErrNoUUID) {
			t.Fatalf("err = %v, want ErrNoUUID", err)
		}
	})
	t.Run("no sysfs block is an error", func(t *testing.T) {
		// This snapshot holds only CPU data: ghw would report 0 disks.
		_, err := Collect(t.Context(), WithSnapshot(filepath.Join(dir, "linux-amd64-offlineCPUs.tar.gz")), WithRequireUUID(false))
		if !errors.Is(err, ErrNoSysfs) {
			t.Fatalf("err = %v, want ErrNoSysfs", err)
		}
	})
}

func TestCollectHostSnapshot(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	// The snapshot is unpacked into $TMPDIR and removed afterwards.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	inv, err := Collect(t.Context(), WithSnapshot(hostSnapshot), WithRequireUUID(false))
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("unpacked snapshot left behind in %s: %v", tmp, left)
	}
	// Values of the machine the snapshot was taken on.
	if c := inv.GetCpu(); c.GetModel() != "AMD EPYC" || c.GetCores() != 2 {
		t.Errorf("CPU = %v, want 2 AMD EPYC cores", c)
	}
	wantDisk := &anvilv1.Disk{
		Name: "vda", Path: "/dev/vda", Serial: "181663734719740", SizeBytes: 256 << 30, Rotational: true,
		Controller: "virtio", PhysicalBlockSize: 4096, LogicalBlockSize: 512, BusPath: "pci-0000:00:02.0", Kind: "disk",
	}
	if len(inv.GetDisks()) != 1 || inv.GetDisks()[0].String() != wantDisk.String() {
		t.Errorf("disks = %v, want only %v (zram0 skipped)", inv.GetDisks(), wantDisk)
	}
	wantNIC := &anvilv1.NIC{
		Name: "eth0", Mac: "02:fc:00:00:00:01", Driver: "virtio_net", LinkUp: true,
		PciAddress: "0000:00:03.0", Mtu: 1400,
	}
	if len(inv.GetNics()) != 1 || inv.GetNics()[0].String() != wantNIC.String() {
		t.Errorf("NICs = %v, want only %v", inv.GetNics(), wantNIC)
	}
}

func TestCollectErrors(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	noUUID := copyTree(t, machineA)
	if err := os.Remove(filepath.Join(noUUID, "sys/class/dmi/id/product_uuid")); err != nil {
		t.Fatal(err)
	}
	zeroUUID := copyTree(t, machineA)
	if err := os.WriteFile(filepath.Join(zeroUUID, "sys/class/dmi/id/product_uuid"), []byte("00000000-0000-0000-0000-000000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badUUID := copyTree(t, machineA)
	if err := os.WriteFile(filepath.Join(badUUID, "sys/class/dmi/id/product_uuid"), []byte("Not Settable\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noProc := copyTree(t, machineA)
	if err := os.RemoveAll(filepath.Join(noProc, "proc")); err != nil {
		t.Fatal(err)
	}
	noCPU := copyTree(t, machineA)
	if err := os.WriteFile(filepath.Join(noCPU, "proc/cpuinfo"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name string
		ctx  context.Context
		opts []Option
		want error
	}{
		{"empty root", t.Context(), []Option{WithRoot(t.TempDir())}, ErrNoSysfs},
		{"no procfs", t.Context(), []Option{WithRoot(noProc)}, ErrNoProcfs},
		{"no product_uuid", t.Context(), []Option{WithRoot(noUUID)}, ErrNoUUID},
		{"all-zero UUID", t.Context(), []Option{WithRoot(zeroUUID)}, ErrNoUUID},
		{"malformed UUID", t.Context(), []Option{WithRoot(badUUID)}, ErrNoUUID},
		{"no CPU", t.Context(), []Option{WithRoot(noCPU)}, ErrNoCPU},
		{"canceled", canceled, []Option{WithRoot(machineA)}, context.Canceled},
		{"missing snapshot", t.Context(), []Option{WithSnapshot(filepath.Join(t.TempDir(), "x.tar.gz"))}, os.ErrNotExist},
		{"root and snapshot", t.Context(), []Option{WithRoot(machineA), WithSnapshot(hostSnapshot)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := Collect(tt.ctx, tt.opts...)
			if err == nil {
				t.Fatalf("Collect = %v, want an error", inv)
			}
			if inv != nil {
				t.Errorf("Collect returned an inventory with error %v", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}

	// Without the identity requirement the rest is still collected.
	inv, err := Collect(t.Context(), WithRoot(noUUID), WithRequireUUID(false))
	if err != nil {
		t.Fatal(err)
	}
	if inv.GetProduct().GetUuid() != "" || inv.GetProduct().GetName() == "" || len(inv.GetDisks()) == 0 {
		t.Errorf("without UUID: product = %v, %d disks", inv.GetProduct(), len(inv.GetDisks()))
	}
}

func TestCollectLoopDevices(t *testing.T) {
	t.Setenv("PCIDB_PATH", "")
	inv, err := Collect(t.Context(), WithRoot(machineA), WithLoopDevices(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv.GetDisks() {
		if d.GetController() == "loop" {
			t.Errorf("loop device %s reported with WithLoopDevices(false)", d.GetName())
		}
	}
	if len(inv.GetDisks()) != 4 {
		t.Errorf("got %d disks, want 4", len(inv.GetDisks()))
	}
}

// TestCollectLive reads this machine. The SMBIOS UUID is the machine's
// identity, so it needs DMI (and root, to read product_uuid).
func TestCollectLive(t *testing.T) {
	if _, err := os.Stat("/sys/class/dmi/id"); err != nil {
		t.Skip("no /sys/class/dmi on this machine: it has no SMBIOS identity")
	}
	inv, err := Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := canonicalUUID(inv.GetProduct().GetUuid()); err != nil || inv.GetProduct().GetUuid() != strings.ToLower(inv.GetProduct().GetUuid()) {
		t.Errorf("product UUID %q is not lower-case canonical: %v", inv.GetProduct().GetUuid(), err)
	}
	checkLiveBasics(t, inv)
}

// TestCollectLiveAnyMachine reads this machine even without DMI, netlink
// included, and checks the result against /proc and /sys directly.
func TestCollectLiveAnyMachine(t *testing.T) {
	if _, err := os.Stat("/sys/block"); err != nil {
		t.Skip("sysfs not mounted")
	}
	inv, err := Collect(t.Context(), WithRequireUUID(false))
	if err != nil {
		t.Fatal(err)
	}
	checkLiveBasics(t, inv)
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, e := range entries {
		if e.Name() != "lo" && e.Name() != "bonding_masters" {
			want = append(want, e.Name())
		}
	}
	for _, n := range inv.GetNics() {
		got = append(got, n.GetName())
	}
	if !slices.Equal(got, want) {
		t.Errorf("NICs = %v, want %v", got, want)
	}
}

func checkLiveBasics(t *testing.T, inv *anvilv1.Inventory) {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var online uint32
	for s := bufio.NewScanner(f); s.Scan(); {
		if strings.HasPrefix(s.Text(), "processor") {
			online++
		}
	}
	if c := inv.GetCpu(); c.GetCores() < 1 || c.GetThreads() != online {
		t.Errorf("CPU = %v, want ≥1 core and %d threads", c, online)
	}
	if inv.GetMemory().GetTotalBytes() == 0 || inv.GetMemory().GetUsableBytes() == 0 {
		t.Errorf("memory = %v, want > 0", inv.GetMemory())
	}
	for _, d := range inv.GetDisks() {
		if d.GetSizeBytes() == 0 || d.GetController() == "" || skipDisk(d.GetName()) {
			t.Errorf("disk %v: want a size, a controller, and no ram/zram", d)
		}
	}
}
