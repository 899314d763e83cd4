package labkit

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
)

// Each odd lab VM's BMC is OpenIPMI's simulator (ipmi_sim, Debian's
// openipmi) in the lab's namespace, on the controller's address and a port
// of its own; its chassis control program (anvil-lab-chassis) drives the
// VM's QEMU over QMP. Each even VM's BMC is a Redfish service
// (anvil-lab-redfish, test/labkit/redfish) backed by QMP the same way. The
// controller thus powers the VMs through real IPMI 2.0 over LAN (RMCP+) and
// real Redfish over HTTP, as it would a rack of servers.
const (
	bmcUser     = "anvil"
	bmcPassword = "lab-bmc-secret"
	bmcBasePort = 6230
)

// BMCPort is VM i's BMC port (UDP for IPMI, TCP for Redfish) on
// ControllerIP.
func BMCPort(i int) int { return bmcBasePort + i }

// redfishBMC reports whether VM i's BMC speaks Redfish (else IPMI).
func redfishBMC(i int) bool { return i%2 == 0 }

// BMCAddress is the VM's BMC as the controller is told it. ipmi_sim speaks
// cipher suite 3 (it ignores 17, the driver's first choice).
func (vm *VM) BMCAddress() string {
	if redfishBMC(vm.Index) {
		return fmt.Sprintf("redfish+http://%s:%s@%s:%d/redfish/v1/Systems/1", bmcUser, bmcPassword, ControllerIP, BMCPort(vm.Index))
	}
	return fmt.Sprintf("ipmi://%s:%s@%s:%d?cipher=3", bmcUser, bmcPassword, ControllerIP, BMCPort(vm.Index))
}

// startBMC starts vm's BMC: Redfish or IPMI.
func (l *Lab) startBMC(vm *VM) error {
	if redfishBMC(vm.Index) {
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
	lanConf, emu, err := ipmisim.WriteConfig(dir, ipmisim.Config{Name: fmt.Sprintf("anvil-lab-bmc%d", vm.Index), Addr: ControllerIP, Port: BMCPort(vm.Index),
		User: bmcUser, Password: bmcPassword, Chassis: chassis + " " + vm.QMP})
	if err != nil {
		return err
	}
	return l.spawn(filepath.Join(l.cfg.Dir, fmt.Sprintf("vm%d-bmc.pid", vm.Index)), filepath.Join(dir, "ipmi_sim.log"),
		ipmisim.Command(lanConf, emu, filepath.Join(dir, "state"))...)
}
