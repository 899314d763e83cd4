// Package labkit runs anvil's QEMU mini-lab: a network namespace of its
// own holding a Linux bridge (the provisioning network, 192.168.77.0/24)
// and one tap device per VM; the real anvil-controller inside it, serving
// full-mode DHCP, TFTP and the HTTP boot service on the bridge; and QEMU
// VMs (TCG, or KVM where a probe shows it works) that network-boot the
// agent from it through their iPXE option ROM. Nothing touches the host's
// own network: every interface and address lives in the namespace, which
// Down deletes with everything else the lab created.
//
// The lab outlives the process that started it (make lab leaves it up):
// its processes run in their own sessions and are found again through
// the pid files in the lab's directory. Open attaches to a running lab.
package labkit

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/controller/boot"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/test/labkit/qemu"
)

// The provisioning network inside the lab's namespace: the controller's
// address on the bridge and the ports it serves there.
const (
	ControllerIP = "192.168.77.1"
	GRPCPort     = 7443
	HTTPPort     = 8080
)

// agentKernelArgs are the extra kernel arguments of the lab's agents.
const agentKernelArgs = "console=ttyS0,115200 panic=10"

// Config describes a lab.
type Config struct {
	// Dir holds the controller's data, the VMs' disks, consoles and QMP
	// sockets, the logs and the pid files.
	Dir string
	// Namespace is the network namespace's name (one lab per name).
	Namespace string
	// Machines is how many VMs to boot.
	Machines int
	// Bin holds anvil-controller, anvilctl, anvil-lab-chassis and
	// anvil-lab-redfish (make build).
	Bin string
	// Kernel and Initramfs are the agent's boot files.
	Kernel, Initramfs string
	// ImageDir is served under /images/ (the tiny CI image).
	ImageDir string
	// MemoryMiB and CPUs of each VM.
	MemoryMiB, CPUs int
	// DiskMiB is the virtio disk, NVMeMiB the emulated NVMe disk.
	DiskMiB, NVMeMiB int64
	// Accel is "tcg", "kvm" or "auto" (probe KVM, else TCG); empty takes
	// $ANVIL_QEMU_ACCEL, else auto (qemu.ChooseAccel).
	Accel string
	// Firmware is "mix" (odd VMs UEFI, even VMs BIOS), "uefi" or "bios".
	Firmware string
	// ControllerArgs are extra anvil-controller flags.
	ControllerArgs []string
	// HTTPBoot makes the UEFI VMs boot through their firmware's HTTP Boot
	// client (OVMF's PXE entries switched off), not PXE and TFTP.
	HTTPBoot bool
	// DHCP is "full" (the controller leases the addresses) or "proxy"
	// (Debian's dnsmasq leases them in the namespace, the controller only
	// answers PXE and iPXE clients with boot information).
	DHCP string
	// Direct starts the VMs with the agent's kernel and initramfs given to
	// QEMU (-kernel), past the firmware and the network boot: the baseline
	// the boot benchmark compares network boots with.
	Direct bool
}

// Defaults returns a 3-VM lab in dir.
func Defaults(dir string) Config {
	return Config{Dir: dir, Namespace: "anvil-lab", Machines: 3, MemoryMiB: 1024, CPUs: 1, DiskMiB: 1024, NVMeMiB: 1024, Firmware: "mix", DHCP: "full"}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("lab dir %q must be an absolute path", c.Dir))
	}
	if c.Namespace == "" || len(c.Namespace) > 32 || strings.ContainsAny(c.Namespace, "/ ") {
		errs = append(errs, fmt.Errorf("namespace name %q: want a short plain name", c.Namespace))
	}
	if c.Machines < 1 || c.Machines > 50 {
		errs = append(errs, fmt.Errorf("%d machines: want 1-50", c.Machines))
	}
	for what, p := range map[string]string{"controller": filepath.Join(c.Bin, "anvil-controller"), "BMC chassis program": filepath.Join(c.Bin, "anvil-lab-chassis"),
		"Redfish BMC": filepath.Join(c.Bin, "anvil-lab-redfish"),
		"kernel":      c.Kernel, "initramfs": c.Initramfs} {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if c.MemoryMiB < 256 || c.CPUs < 1 || c.DiskMiB < 256 || c.NVMeMiB < 64 {
		errs = append(errs, fmt.Errorf("VM size %d MiB / %d CPUs / disks %d+%d MiB too small", c.MemoryMiB, c.CPUs, c.DiskMiB, c.NVMeMiB))
	}
	switch c.Accel {
	case "", "tcg", "kvm", "auto":
	default:
		errs = append(errs, fmt.Errorf("accel %q: want tcg, kvm or auto", c.Accel))
	}
	switch c.Firmware {
	case "mix", "uefi", "bios":
	default:
		errs = append(errs, fmt.Errorf("firmware %q: want mix, uefi or bios", c.Firmware))
	}
	switch c.DHCP {
	case "full", "proxy":
	default:
		errs = append(errs, fmt.Errorf("DHCP %q: want full or proxy", c.DHCP))
	}
	return errors.Join(errs...)
}

// VM is one lab machine.
type VM struct {
	Index int
	UUID  string
	MAC   string
	// Disk and NVMe are the backing files; DiskSerial and NVMeSerial the
	// serials the guest sees.
	Disk, NVMe             string
	DiskSerial, NVMeSerial string
	// Protected is the NVMe disk's second namespace (nvme0n2): a GPT whose
	// partition is named anvil-protected over a pattern, which no erase
	// and no install may change (ProtectedIntact checks it).
	Protected string
	// Console is the serial console log, QMP the monitor socket.
	Console, QMP string
	// Firmware is OVMF (UEFI, with the VM's own variable store) or SeaBIOS.
	Firmware qemu.Firmware
	// PoweredOn is when its QEMU process last started.
	PoweredOn time.Time
	tap       string
}

// vmFor is the deterministic identity of VM i (1-based).
func vmFor(c Config, i int) *VM {
	s := sha256.Sum256(fmt.Appendf(nil, "anvil-lab/%s/%d", c.Namespace, i))
	s[6] = s[6]&0x0f | 0x40 // version 4
	s[8] = s[8]&0x3f | 0x80 // RFC 4122 variant
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
	dir := filepath.Join(c.Dir, fmt.Sprintf("vm%d", i))
	fw := qemu.Firmware{UEFI: c.Firmware == "uefi" || (c.Firmware == "mix" && i%2 == 1)}
	if fw.UEFI {
		fw.Vars = filepath.Join(dir, "ovmf-vars.fd")
	}
	return &VM{Firmware: fw,
		Index: i, UUID: uuid, MAC: fmt.Sprintf("52:54:00:77:%02x:%02x", s[16], i),
		Disk: filepath.Join(dir, "disk.img"), NVMe: filepath.Join(dir, "nvme.img"), Protected: filepath.Join(dir, "nvme-ns2.img"),
		DiskSerial: fmt.Sprintf("LABVD%04d", i), NVMeSerial: fmt.Sprintf("LABNV%04d", i),
		Console: filepath.Join(dir, "console.log"), QMP: filepath.Join(dir, "qmp.sock"),
		tap: fmt.Sprintf("tap%d", i),
	}
}

// Lab is a running lab.
type Lab struct {
	cfg   Config
	VMs   []*VM
	Accel string
	// Started is when Up began (phase times count from it).
	Started time.Time
}

// ControllerAddr is the gRPC address inside the namespace.
func ControllerAddr() string { return fmt.Sprintf("%s:%d", ControllerIP, GRPCPort) }

// BootURL is the boot service's URL inside the namespace.
func BootURL() string { return fmt.Sprintf("http://%s:%d", ControllerIP, HTTPPort) }

// Dir is the lab's directory (logs, disks, consoles).
func (l *Lab) Dir() string { return l.cfg.Dir }

// Namespace is the lab's network namespace.
func (l *Lab) Namespace() string { return l.cfg.Namespace }

// DataDir is the controller's data dir (CA, tokens, database).
func (l *Lab) DataDir() string { return filepath.Join(l.cfg.Dir, "controller") }

// Up creates the namespace, starts the controller and boots the VMs. A
// previous lab of the same namespace or directory is removed first.
func Up(ctx context.Context, c Config) (*Lab, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if err := Down(c); err != nil {
		return nil, fmt.Errorf("remove the previous lab: %w", err)
	}
	l := &Lab{cfg: c, Started: time.Now()}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			Down(c) //nolint:errcheck // the setup error is what the caller needs
		}
	}()
	if err := l.network(ctx); err != nil {
		return nil, err
	}
	accel, err := qemu.ChooseAccel(ctx, c.Accel, c.Kernel)
	if err != nil {
		return nil, err
	}
	l.Accel = accel
	if err := l.startLLDPD(); err != nil {
		return nil, err
	}
	if c.DHCP == "proxy" {
		if err := l.startDnsmasq(); err != nil {
			return nil, err
		}
	}
	if err := l.startController(ctx); err != nil {
		return nil, err
	}
	for i := 1; i <= c.Machines; i++ {
		vm := vmFor(c, i)
		if err := l.createDisks(vm); err != nil {
			return nil, err
		}
		l.VMs = append(l.VMs, vm)
		if err := l.startBMC(vm); err != nil {
			return nil, err
		}
		start := l.StartVM
		if c.Direct {
			start = l.startAgentDirect
		}
		if err := start(vm); err != nil {
			return nil, err
		}
	}
	ok = true
	return l, nil
}

// Open attaches to the lab Up left running in c.Dir.
func Open(c Config) (*Lab, error) {
	if _, err := readPid(filepath.Join(c.Dir, "controller.pid")); err != nil {
		return nil, fmt.Errorf("no lab running in %s: %w", c.Dir, err)
	}
	l := &Lab{cfg: c}
	for i := 1; i <= c.Machines; i++ {
		vm := vmFor(c, i)
		if st, err := os.Stat(filepath.Join(c.Dir, fmt.Sprintf("vm%d.pid", i))); err == nil {
			vm.PoweredOn = st.ModTime()
		}
		l.VMs = append(l.VMs, vm)
	}
	return l, nil
}

// ip runs an iproute2 command.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// network creates the namespace, the bridge and the taps.
func (l *Lab) network(ctx context.Context) error {
	ns := l.cfg.Namespace
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "addr", "add", ControllerIP + "/24", "dev", "br0"},
		{"-n", ns, "link", "set", "br0", "up"},
	}
	for i := 1; i <= l.cfg.Machines; i++ {
		if !RedfishBMC(i) {
			// The IPMI BMC's own address on the segment.
			steps = append(steps, []string{"-n", ns, "addr", "add", BMCIP(i) + "/24", "dev", "br0"})
		}
		tap := fmt.Sprintf("tap%d", i)
		steps = append(steps,
			[]string{"-n", ns, "tuntap", "add", tap, "mode", "tap"},
			[]string{"-n", ns, "link", "set", tap, "master", "br0"},
			[]string{"-n", ns, "link", "set", tap, "up"})
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("lab network: %w", err)
		}
	}
	return nil
}

// spawn starts cmd inside the namespace in a session of its own, logging
// to logFile, and records its pid in pidFile.
func (l *Lab) spawn(pidFile, logFile string, cmd ...string) error {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	c := exec.Command("ip", append([]string{"netns", "exec", l.cfg.Namespace}, cmd...)...)
	c.Stdout, c.Stderr = lf, lf
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd[0], err)
	}
	// ip netns exec execs the command: the pid is the command's own.
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(c.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	go c.Wait() //nolint:errcheck // reaps it; its fate shows in its log
	return nil
}

func (l *Lab) startController(ctx context.Context) error {
	c := l.cfg
	data := l.DataDir()
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	args := []string{filepath.Join(c.Bin, "anvil-controller"),
		"--data-dir", data,
		"--listen", ControllerAddr(), "--hosts", ControllerIP,
		"--heartbeat-interval", "5s",
		"--boot-listen", fmt.Sprintf("%s:%d", ControllerIP, HTTPPort), "--boot-url", BootURL(),
		"--boot-kernel", c.Kernel, "--boot-initramfs", c.Initramfs,
		"--boot-kernel-args", agentKernelArgs,
		"--dhcp", c.DHCP, "--dhcp-interface", "br0", "--dhcp-server-ip", ControllerIP,
		"--tftp-listen", fmt.Sprintf("%s:69", ControllerIP),
		// Registration erases every disk with its own secure erase: the
		// NVMe disk through Format NVM on QEMU's emulated controller, the
		// virtio disk (no hardware erase) by the verified overwrite the
		// fallback policy allows.
		"--register-erase", "secure", "--erase-fallback",
	}
	if c.DHCP == "full" {
		args = append(args, "--dhcp-pool", poolFirst+"-"+poolLast, "--dhcp-netmask", "255.255.255.0")
	}
	if c.ImageDir != "" {
		args = append(args, "--image-dir", c.ImageDir)
	}
	args = append(args, c.ControllerArgs...)
	log := filepath.Join(c.Dir, "controller.log")
	if err := l.spawn(filepath.Join(c.Dir, "controller.pid"), log, args...); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "boot service listening") {
			return nil
		}
		if pid, err := readPid(filepath.Join(c.Dir, "controller.pid")); err != nil || syscall.Kill(pid, 0) != nil {
			return fmt.Errorf("controller exited:\n%s", b)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(log)
	return fmt.Errorf("controller not ready after 20 s:\n%s", b)
}

// The lab's address pool, whoever leases it.
const poolFirst, poolLast = "192.168.77.100", "192.168.77.199"

// DnsmasqLeases is the lease file of the proxy-mode lab's DHCP server.
func (l *Lab) DnsmasqLeases() string { return filepath.Join(l.cfg.Dir, "dnsmasq.leases") }

// startDnsmasq runs Debian's dnsmasq as the segment's DHCP server (proxy
// mode): addresses only, no DNS, no boot options; anvil answers beside it.
func (l *Lab) startDnsmasq() error {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		return fmt.Errorf("dnsmasq (Debian package dnsmasq-base, hack/install-deps.sh): %w", err)
	}
	return l.spawn(filepath.Join(l.cfg.Dir, "dnsmasq.pid"), filepath.Join(l.cfg.Dir, "dnsmasq.log"),
		"dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null", "--port=0", "--interface=br0", "--bind-interfaces",
		"--dhcp-range="+poolFirst+","+poolLast+",255.255.255.0,1h", "--dhcp-leasefile="+l.DnsmasqLeases(), "--pid-file=", "--log-dhcp")
}

func (l *Lab) createDisks(vm *VM) error {
	if err := os.MkdirAll(filepath.Dir(vm.Disk), 0o755); err != nil {
		return err
	}
	for p, mib := range map[string]int64{vm.Disk: l.cfg.DiskMiB, vm.NVMe: l.cfg.NVMeMiB} {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		err = f.Truncate(mib << 20)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("disk %s: %w", p, err)
		}
	}
	if err := writeProtected(vm.Protected); err != nil {
		return err
	}
	if vm.Firmware.UEFI {
		return qemu.EnsureVars(vm.Firmware.Vars)
	}
	return nil
}

// vmOptions is a lab VM: a virtio disk and an emulated NVMe disk with
// serials (the agent installs to the NVMe disk, /dev/nvme0n1 sorting
// first), SMBIOS identity, a QMP socket for the BMC.
//
// A BIOS VM boots SeaBIOS and the iPXE ROM QEMU ships, in the order of the
// devices' boot indexes: the NIC, the NVMe disk, the virtio disk (the BMC
// renumbers them for a next-boot override).
//
// A UEFI VM boots OVMF with its own variable store and no boot index: its
// BootOrder is its NVRAM's, as on a server (boot indexes would make OVMF
// rewrite BootOrder at every boot and delete the entries it does not
// match, the installed disk's among them). Its NIC carries no option ROM,
// so the firmware's own PXE client fetches iPXE over TFTP, as a real
// server's does. A fresh store lists the blank disks before the network:
// they fail at once, and the agent puts the network first and the
// installed disk right after it.
func (l *Lab) vmOptions(vm *VM) qemu.Options {
	c := l.cfg
	uefi := vm.Firmware.UEFI
	index := func(n int) int {
		if uefi {
			return 0
		}
		return n
	}
	nic := qemu.NIC{Net: qemu.Tap{Ifname: vm.tap}, MAC: vm.MAC, Speed: true, BootIndex: index(1)}
	var extra []qemu.Device
	if !RedfishBMC(vm.Index) {
		extra = append(extra, qemu.IPMI{Port: ipmiKCSPort(vm.Index)})
	}
	if uefi {
		nic.ROM = qemu.NoROM
		if c.HTTPBoot {
			extra = append(extra, qemu.FwCfg{Name: "opt/org.tianocore/IPv4PXESupport", Value: "n"},
				qemu.FwCfg{Name: "opt/org.tianocore/IPv6PXESupport", Value: "n"})
		}
	}
	return qemu.Options{
		Name:  fmt.Sprintf("anvil-lab-%d", vm.Index),
		Accel: l.Accel, MemoryMiB: c.MemoryMiB, CPUs: c.CPUs,
		Firmware: vm.Firmware,
		Console:  vm.Console,
		Devices: append([]qemu.Device{
			qemu.QMP{Socket: vm.QMP},
			qemu.SMBIOS{Manufacturer: "anvil", Product: "lab-vm", Serial: fmt.Sprintf("LAB%04d", vm.Index), UUID: vm.UUID, Family: "lab",
				BoardProduct: "lab-board", BoardSerial: fmt.Sprintf("BOARD%04d", vm.Index), ChassisSerial: fmt.Sprintf("CHASSIS%04d", vm.Index)},
			nic,
			qemu.RNG{},
			qemu.Disk{ID: "vd0", File: vm.Disk, Serial: vm.DiskSerial, BootIndex: index(3), Unsafe: true},
			qemu.Disk{ID: "nv0", File: vm.NVMe, Namespaces: []string{vm.Protected}, Serial: vm.NVMeSerial, NVMe: true, BootIndex: index(2), Unsafe: true},
		}, extra...),
	}
}

// StartVM powers vm on (a new QEMU process).
func (l *Lab) StartVM(vm *VM) error { return l.start(vm, l.vmOptions(vm)) }

// StartVMDirect powers vm on with a kernel, initrd and command line given
// to QEMU (-kernel): past the firmware and the network boot.
func (l *Lab) StartVMDirect(vm *VM, kernel, initrd, cmdline string) error {
	o := l.vmOptions(vm)
	o.Kernel, o.Initrd, o.Append = kernel, initrd, cmdline
	return l.start(vm, o)
}

// startAgentDirect starts the agent on vm with -kernel and the command
// line the boot service would give it (the controller, its CA, the data
// dir's boot token).
func (l *Lab) startAgentDirect(vm *VM) error {
	tok, err := pki.ReadTokenFile(filepath.Join(l.DataDir(), "boot.token"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(l.DataDir(), "ca.crt"))
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		return fmt.Errorf("%s holds no PEM certificate", filepath.Join(l.DataDir(), "ca.crt"))
	}
	cmdline, err := boot.Cmdline(ControllerAddr(), pki.Fingerprint(blk.Bytes), tok, agentKernelArgs)
	if err != nil {
		return err
	}
	return l.StartVMDirect(vm, l.cfg.Kernel, l.cfg.Initramfs, cmdline)
}

func (l *Lab) start(vm *VM, o qemu.Options) error {
	pidf := filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d.pid", vm.Index))
	if pid, err := readPid(pidf); err == nil && syscall.Kill(pid, 0) == nil {
		return fmt.Errorf("VM %d is running (pid %d)", vm.Index, pid)
	}
	args, err := o.Command()
	if err != nil {
		return err
	}
	os.Remove(vm.QMP)
	vm.PoweredOn = time.Now()
	return l.spawn(pidf, filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d.log", vm.Index)), args...)
}

// KillVM pulls vm's plug: its QEMU process is killed at once.
func (l *Lab) KillVM(vm *VM) error {
	pidf := filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d.pid", vm.Index))
	pid, err := readPid(pidf)
	if err != nil {
		return fmt.Errorf("VM %d: %w", vm.Index, err)
	}
	if err := killWait(pid, 5*time.Second); err != nil {
		return fmt.Errorf("VM %d: %w", vm.Index, err)
	}
	return os.Remove(pidf)
}

// StopController kills the controller; StartController starts it again
// on the same data dir.
func (l *Lab) StopController() error {
	pidf := filepath.Join(l.cfg.Dir, "controller.pid")
	pid, err := readPid(pidf)
	if err != nil {
		return err
	}
	if err := killWait(pid, 10*time.Second); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return os.Remove(pidf)
}

// StartController starts the controller again (after StopController).
func (l *Lab) StartController(ctx context.Context) error { return l.startController(ctx) }

// ConsoleText returns what vm printed on its serial console.
func (l *Lab) ConsoleText(vm *VM) string {
	b, _ := os.ReadFile(vm.Console)
	return string(b)
}

func readPid(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: %q", p, b)
	}
	return pid, nil
}

// killWait sends SIGKILL to pid and waits until it is gone.
func killWait(pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pid %d still alive %v after SIGKILL", pid, timeout)
}

// Down removes the lab of c: kills its processes (pid files, then
// anything left in the namespace), deletes the namespace with its bridge
// and taps, and removes the directory. A lab that does not exist is fine.
func Down(c Config) error {
	var errs []error
	pids, _ := filepath.Glob(filepath.Join(c.Dir, "*.pid"))
	for _, p := range pids {
		if pid, err := readPid(p); err == nil {
			if err := killWait(pid, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", c.Namespace)); err == nil {
		out, _ := exec.Command("ip", "netns", "pids", c.Namespace).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				if err := killWait(pid, 10*time.Second); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := ip(context.Background(), "netns", "del", c.Namespace); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
