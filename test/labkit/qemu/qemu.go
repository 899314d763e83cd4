// Package qemu is the one place that builds a QEMU command line for anvil's
// lab and tests (qemu-system-x86_64, QEMU 7.2 as Debian 12 ships it). A VM
// is an Options value — accelerator, memory, firmware, an optional direct
// kernel boot, the serial console — plus a list of Devices, each adding its
// own arguments: a NIC on a tap or on user networking, virtio and NVMe
// disks, an RNG, SMBIOS identity, a QMP socket for the lab's BMC, the
// firmware's debug console. The lab (package labkit), the boot and image
// tests and the BMC tests all build their VMs here, so a change of policy
// (the accelerator, the entropy source, the firmware files) is made once.
//
// Firmware is SeaBIOS (QEMU's default) or OVMF, the UEFI firmware of
// Debian's ovmf package, with a writable copy of its variable store per VM
// (it holds that VM's Boot#### entries and BootOrder).
package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/anvil-metal/anvil/test/labkit/qmp"
)

// Binary is the QEMU system emulator the lab runs.
const Binary = "qemu-system-x86_64"

// Debian's OVMF (package ovmf): the read-only code and the template of the
// variable store each VM copies (4 MiB flash layout).
const (
	OVMFCode         = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Options describe one VM.
type Options struct {
	// Name shows in QEMU's process title and messages.
	Name string
	// Accel is "tcg" or "kvm" (see ChooseAccel); empty is "tcg".
	Accel string
	// MemoryMiB and CPUs size the VM (defaults 512 and 1).
	MemoryMiB, CPUs int
	// Firmware is SeaBIOS (zero value) or OVMF.
	Firmware Firmware
	// Kernel, Initrd and Append boot a kernel directly (-kernel), past the
	// firmware's boot order.
	Kernel, Initrd, Append string
	// Console is the file the first serial port writes to; empty sends it
	// to QEMU's standard output.
	Console string
	// RTC sets the guest's clock at power-on ("2001-01-01T00:00:00");
	// empty is the host's UTC time.
	RTC string
	// NoReboot makes a guest reboot exit QEMU (a kernel panic with
	// panic=-1 then ends the test instead of looping).
	NoReboot bool
	// Devices are the VM's hardware, in order.
	Devices []Device
}

// Device is one piece of a VM's hardware: it adds its own arguments.
type Device interface {
	Args() []string
}

// Firmware is the VM's firmware.
type Firmware struct {
	// UEFI selects OVMF; otherwise SeaBIOS.
	UEFI bool
	// Vars is the VM's own copy of the OVMF variable store (see
	// EnsureVars); required with UEFI.
	Vars string
}

// Name is "uefi" or "bios".
func (f Firmware) Name() string {
	if f.UEFI {
		return "uefi"
	}
	return "bios"
}

// Args are the pflash drives of OVMF; SeaBIOS needs none.
func (f Firmware) Args() []string {
	if !f.UEFI {
		return nil
	}
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + f.Vars,
	}
}

// EnsureVars creates path as a copy of the OVMF variable store template
// unless it exists: a VM keeps its boot entries across power cycles, as a
// server keeps its NVRAM.
func EnsureVars(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	src, err := os.Open(OVMFVarsTemplate)
	if err != nil {
		return fmt.Errorf("OVMF variable store template (Debian package ovmf): %w", err)
	}
	defer src.Close()
	tmp := path + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("OVMF variables %s: %w", path, err)
	}
	return nil
}

// Validate reports every problem of o.
func (o Options) Validate() error {
	var errs []error
	switch o.Accel {
	case "", "tcg", "kvm":
	default:
		errs = append(errs, fmt.Errorf("accelerator %q: want tcg or kvm", o.Accel))
	}
	if o.MemoryMiB < 0 || o.CPUs < 0 {
		errs = append(errs, fmt.Errorf("VM size %d MiB / %d CPUs", o.MemoryMiB, o.CPUs))
	}
	if o.Firmware.UEFI {
		if o.Firmware.Vars == "" {
			errs = append(errs, errors.New("UEFI firmware needs the VM's own variable store (Firmware.Vars)"))
		}
		if _, err := os.Stat(OVMFCode); err != nil {
			errs = append(errs, fmt.Errorf("OVMF (Debian package ovmf, hack/install-deps.sh): %w", err))
		}
	}
	if (o.Initrd != "" || o.Append != "") && o.Kernel == "" {
		errs = append(errs, errors.New("an initrd or a command line without a kernel"))
	}
	for _, d := range o.Devices {
		if v, ok := d.(interface{ validate() error }); ok {
			if err := v.validate(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Command returns the VM's command line, the binary first.
func (o Options) Command() ([]string, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("VM %s: %w", o.Name, err)
	}
	accel, cpu := "tcg", "max" // -cpu max emulates RDRAND: the guest's CRNG gets going under TCG
	if o.Accel == "kvm" {
		accel, cpu = "kvm", "host"
	}
	mem, cpus := o.MemoryMiB, o.CPUs
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 1
	}
	args := []string{Binary}
	if o.Name != "" {
		args = append(args, "-name", o.Name)
	}
	args = append(args,
		"-machine", "pc", "-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config", "-display", "none",
	)
	if o.Console != "" {
		args = append(args, "-serial", "file:"+o.Console)
	} else {
		args = append(args, "-serial", "stdio")
	}
	if o.NoReboot {
		args = append(args, "-no-reboot")
	}
	if o.RTC != "" {
		args = append(args, "-rtc", "base="+o.RTC)
	}
	args = append(args, o.Firmware.Args()...)
	if o.Kernel != "" {
		args = append(args, "-kernel", o.Kernel)
		if o.Initrd != "" {
			args = append(args, "-initrd", o.Initrd)
		}
		if o.Append != "" {
			args = append(args, "-append", o.Append)
		}
	}
	for _, d := range o.Devices {
		args = append(args, d.Args()...)
	}
	return args, nil
}

// Netdev is the host side of a NIC.
type Netdev interface {
	netdev(id string) string
}

// Tap is a tap device (created by the caller, e.g. in the lab's network
// namespace).
type Tap struct{ Ifname string }

func (t Tap) netdev(id string) string {
	return fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, t.Ifname)
}

// User is QEMU's user networking: the guest reaches the host's loopback as
// 10.0.2.2. Restrict keeps every packet inside the QEMU process; HostFwd
// forwards host ports ("tcp:127.0.0.1:8080-:80").
type User struct {
	Restrict bool
	HostFwd  []string
}

func (u User) netdev(id string) string {
	s := "user,id=" + id
	if u.Restrict {
		s += ",restrict=on"
	}
	for _, f := range u.HostFwd {
		s += ",hostfwd=" + f
	}
	return s
}

// NoROM is NIC.ROM for a NIC without an option ROM: the firmware's own
// network stack boots from it (OVMF's UEFI PXE client, as a real server's
// firmware does), not the iPXE QEMU ships in its NIC ROMs.
var NoROM = new(string)

// NIC is a virtio network card.
type NIC struct {
	// ID names the device (default "nic0"); its netdev is ID+"-net".
	ID  string
	Net Netdev
	// MAC is the card's address (empty: QEMU's default).
	MAC string
	// ROM is the option ROM file: nil keeps QEMU's (iPXE), NoROM none.
	ROM *string
	// BootIndex places the card in the firmware's boot order (0: not in it).
	BootIndex int
	// Speed reports a 10 Gbit/s full-duplex link to the guest (virtio
	// reports no speed otherwise).
	Speed bool
}

func (n NIC) id() string {
	if n.ID == "" {
		return "nic0"
	}
	return n.ID
}

func (n NIC) validate() error {
	if n.Net == nil {
		return fmt.Errorf("NIC %s has no netdev", n.id())
	}
	return nil
}

// Args implements Device.
func (n NIC) Args() []string {
	nd := n.id() + "-net"
	dev := "virtio-net-pci,id=" + n.id() + ",netdev=" + nd
	if n.MAC != "" {
		dev += ",mac=" + n.MAC
	}
	if n.ROM != nil {
		dev += ",romfile=" + *n.ROM
	}
	if n.Speed {
		dev += ",speed=10000,duplex=full"
	}
	if n.BootIndex > 0 {
		dev += ",bootindex=" + strconv.Itoa(n.BootIndex)
	}
	return []string{"-netdev", n.Net.netdev(nd), "-device", dev}
}

// Disk is a raw disk image on a virtio-blk or NVMe controller.
type Disk struct {
	// ID names the device; its drive is ID+"-drive".
	ID   string
	File string
	// Serial is what the guest reads as the disk's serial number.
	Serial string
	// NVMe puts the disk on an emulated NVMe controller (the cloud
	// kernel's NVMe driver is built in) instead of virtio-blk.
	NVMe bool
	// BootIndex places the disk in the firmware's boot order.
	BootIndex int
	// Unsafe skips the host's fsyncs (cache=unsafe): fast, and what a test
	// disk that dies with the test wants.
	Unsafe bool
	// Namespaces are the backing files of an NVMe disk's further
	// namespaces (nsid 2, 3, …; File is namespace 1): one controller, as
	// nvme-ns devices on its bus.
	Namespaces []string
}

func (d Disk) validate() error {
	if d.ID == "" || d.File == "" {
		return fmt.Errorf("disk %q: want an id and a file", d.ID)
	}
	if len(d.Namespaces) > 0 && !d.NVMe {
		return fmt.Errorf("disk %s: namespaces need an NVMe disk", d.ID)
	}
	for _, f := range append([]string{d.File}, d.Namespaces...) {
		if f == "" || strings.Contains(f, ",") {
			return fmt.Errorf("disk %s: file name %q is empty or has a comma", d.ID, f)
		}
	}
	return nil
}

// Args implements Device.
func (d Disk) Args() []string {
	if len(d.Namespaces) > 0 {
		return d.nvmeNamespaceArgs()
	}
	drive := fmt.Sprintf("file=%s,if=none,id=%s-drive,format=raw", d.File, d.ID)
	if d.Unsafe {
		drive += ",cache=unsafe"
	}
	model := "virtio-blk-pci"
	if d.NVMe {
		model = "nvme"
	}
	dev := fmt.Sprintf("%s,id=%s,drive=%s-drive", model, d.ID, d.ID)
	if d.Serial != "" {
		dev += ",serial=" + d.Serial
	}
	if d.BootIndex > 0 {
		dev += ",bootindex=" + strconv.Itoa(d.BootIndex)
	}
	return []string{"-drive", drive, "-device", dev}
}

// nvmeNamespaceArgs is an NVMe controller with one nvme-ns device per
// file; the boot index goes to namespace 1.
func (d Disk) nvmeNamespaceArgs() []string {
	ctrl := "nvme,id=" + d.ID
	if d.Serial != "" {
		ctrl += ",serial=" + d.Serial
	}
	args := []string{"-device", ctrl}
	for i, f := range append([]string{d.File}, d.Namespaces...) {
		drive := fmt.Sprintf("file=%s,if=none,id=%s-ns%d,format=raw", f, d.ID, i+1)
		if d.Unsafe {
			drive += ",cache=unsafe"
		}
		ns := fmt.Sprintf("nvme-ns,drive=%s-ns%d,bus=%s,nsid=%d", d.ID, i+1, d.ID, i+1)
		if i == 0 && d.BootIndex > 0 {
			ns += ",bootindex=" + strconv.Itoa(d.BootIndex)
		}
		args = append(args, "-drive", drive, "-device", ns)
	}
	return args
}

// RNG is a virtio entropy source: without it (or -cpu max) a guest's CRNG
// may never be ready under TCG, and DHCP and TLS hang.
type RNG struct{}

// Args implements Device.
func (RNG) Args() []string { return []string{"-device", "virtio-rng-pci"} }

// SMBIOS is the machine's identity as firmware and inventory read it:
// system (type 1, with the UUID anvil identifies machines by), baseboard
// (type 2) and chassis (type 3).
type SMBIOS struct {
	Manufacturer, Product, Serial, UUID, Family string
	BoardProduct, BoardSerial                   string
	ChassisSerial                               string
}

// Args implements Device.
func (s SMBIOS) Args() []string {
	t1 := fmt.Sprintf("type=1,manufacturer=%s,product=%s,version=1,serial=%s,uuid=%s", s.Manufacturer, s.Product, s.Serial, s.UUID)
	if s.Family != "" {
		t1 += ",family=" + s.Family
	}
	args := []string{"-smbios", t1}
	if s.BoardSerial != "" {
		args = append(args, "-smbios", fmt.Sprintf("type=2,manufacturer=%s,product=%s,serial=%s", s.Manufacturer, s.BoardProduct, s.BoardSerial))
	}
	if s.ChassisSerial != "" {
		args = append(args, "-smbios", fmt.Sprintf("type=3,manufacturer=%s,serial=%s", s.Manufacturer, s.ChassisSerial))
	}
	return args
}

// QMP is the monitor socket the lab's BMC driver (test/labkit/qmp) powers
// the VM through; StartOff starts the VM powered off.
type QMP struct {
	Socket   string
	StartOff bool
}

// Args implements Device: the arguments the BMC driver needs.
func (q QMP) Args() []string { return qmp.QEMUArgs(q.Socket, q.StartOff) }

// IPMI is an in-band BMC: QEMU's ipmi-bmc-extern talking to an external
// simulator (OpenIPMI's ipmi_sim, "serial kcs ... codec VM") on the
// loopback TCP Port, behind an ISA KCS interface the guest's ipmi_si finds
// through the SMBIOS type 38 and ACPI entries QEMU adds for it. The
// chardev reconnects, so the simulator may start after the VM.
type IPMI struct{ Port int }

// Args implements Device.
func (i IPMI) Args() []string {
	return []string{"-chardev", fmt.Sprintf("socket,id=ipmi0,host=127.0.0.1,port=%d,reconnect=2", i.Port),
		"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0"}
}

// DebugCon writes the firmware's debug console (I/O port 0x402: SeaBIOS's
// boot decisions) to File.
type DebugCon struct{ File string }

// Args implements Device.
func (d DebugCon) Args() []string {
	return []string{"-chardev", "file,id=debugcon,path=" + d.File, "-device", "isa-debugcon,iobase=0x402,chardev=debugcon"}
}

// FwCfg passes a named string to the firmware (QEMU's fw_cfg). OVMF reads
// opt/org.tianocore/IPv4PXESupport and IPv6PXESupport ("n" leaves only
// its HTTP Boot entries for the NICs).
type FwCfg struct{ Name, Value string }

func (f FwCfg) validate() error {
	if f.Name == "" || strings.ContainsAny(f.Name+f.Value, ",") {
		return fmt.Errorf("fw_cfg %q=%q: want a name and no commas", f.Name, f.Value)
	}
	return nil
}

// Args implements Device.
func (f FwCfg) Args() []string { return []string{"-fw_cfg", "name=" + f.Name + ",string=" + f.Value} }
