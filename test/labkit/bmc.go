package labkit

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
)

// Each odd lab VM's BMC is OpenIPMI's simulator (ipmi_sim, Debian's
// openipmi) in the lab's namespace, on an address of its own on the bridge
// (BMCIP) and the standard port 623; its chassis control program
// (anvil-lab-chassis) drives the VM's QEMU over QMP. The VM sees it
// in-band too: QEMU's ipmi-bmc-extern behind a KCS interface, connected to
// the simulator's "VM" serial port on the namespace's loopback (IPMIPort).
// The agent finds it as /dev/ipmi0 and enrolls it (an anvil user with a
// password of its own); nobody tells the controller its address.
//
// Each even VM's BMC is a Redfish service (anvil-lab-redfish,
// test/labkit/redfish) backed by QMP the same way, on ControllerIP and a
// port of its own, which the lab enters as an operator would
// (AttachBMCs). The controller thus powers the VMs through real IPMI 2.0
// over LAN (RMCP+) and real Redfish over HTTP, as it would a rack of
// servers.
const (
	// bmcUser and bmcPassword: the Redfish services' account, and the
	// simulators' vendor administrator (user 2), whom the agent leaves
	// alone.
	bmcUser     = "admin"
	bmcPassword = "lab-bmc-secret"
	bmcBasePort = 6230
	ipmiKCSBase = 9620
)

// BMCPort is VM i's Redfish port on ControllerIP.
func BMCPort(i int) int { return bmcBasePort + i }

// BMCIP is VM i's IPMI BMC address on the lab bridge.
func BMCIP(i int) string { return fmt.Sprintf("192.168.77.%d", 210+i) }

// BMCMAC is the MAC address VM i's IPMI BMC reports.
func BMCMAC(i int) string { return fmt.Sprintf("52:54:00:b0:00:%02x", i) }

// ipmiKCSPort is the loopback port of VM i's in-band IPMI interface.
func ipmiKCSPort(i int) int { return ipmiKCSBase + i }

// RedfishBMC reports whether VM i's BMC speaks Redfish (else IPMI, which
// the agent enrolls in-band).
func RedfishBMC(i int) bool { return i%2 == 0 }

// BMCAddress is the VM's BMC with the lab's administrator credentials:
// what an operator enters for the Redfish VMs (AttachBMCs). For the IPMI
// VMs the controller uses the agent's in-band enrollment instead.
func (vm *VM) BMCAddress() string {
	if RedfishBMC(vm.Index) {
		return fmt.Sprintf("redfish+http://%s:%s@%s:%d/redfish/v1/Systems/1", bmcUser, bmcPassword, ControllerIP, BMCPort(vm.Index))
	}
	return fmt.Sprintf("ipmi://%s:%s@%s", bmcUser, bmcPassword, BMCIP(vm.Index))
}

// startBMC starts vm's BMC: Redfish or IPMI.
func (l *Lab) startBMC(vm *VM) error {
	if RedfishBMC(vm.Index) {
		return l.startRedfish(vm)
	}
	return l.startIPMISim(vm)
}

// startRedfish starts the Redfish service of vm.
func (l *Lab) startRedfish(vm *VM) error {
	bin, err := filepath.Abs(filepath.Join(l.cfg.Bin, "anvil-lab-redfish"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("BMC of VM %d: %w (make build builds it)", vm.Index, err)
	}
	return l.spawn(filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d-bmc.pid", vm.Index)), filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d-redfish.log", vm.Index)),
		bin, "-listen", fmt.Sprintf("%s:%d", ControllerIP, BMCPort(vm.Index)), "-qmp", vm.QMP, "-user", bmcUser, "-password", bmcPassword)
}

// startIPMISim writes the simulator's configuration for vm and starts it.
func (l *Lab) startIPMISim(vm *VM) error {
	dir := filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d-bmc", vm.Index))
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return err
	}
	chassis, err := filepath.Abs(filepath.Join(l.cfg.Bin, "anvil-lab-chassis"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(chassis); err != nil {
		return fmt.Errorf("BMC of VM %d: %w (make build builds it)", vm.Index, err)
	}
	lanConf, emu, err := ipmisim.WriteConfig(dir, ipmisim.Config{Name: fmt.Sprintf("anvil-lab-bmc%d", vm.Index), Addr: BMCIP(vm.Index), Port: 623,
		User: bmcUser, Password: bmcPassword, Chassis: chassis + " " + vm.QMP,
		LAN:        ipmisim.LAN{IP: BMCIP(vm.Index), Netmask: "255.255.255.0", Gateway: ControllerIP, MAC: BMCMAC(vm.Index)},
		SerialPort: ipmiKCSPort(vm.Index)})
	if err != nil {
		return err
	}
	return l.spawn(filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d-bmc.pid", vm.Index)), filepath.Join(dir, "ipmi_sim.log"),
		ipmisim.Command(lanConf, emu, filepath.Join(dir, "state"))...)
}
