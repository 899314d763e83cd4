// Package ipmisim runs OpenIPMI's BMC simulator (ipmi_sim, Debian's
// openipmi) on a loopback UDP port for tests, with its chassis control
// handed to a script that keeps the power state and the boot device in
// files and logs every command it carries out.
package ipmisim

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// User and Password are the simulator's administrator.
const (
	User     = "admin"
	Password = "secret"
)

// SimMAC is the MAC address a simulator started by Run reports.
const SimMAC = "52:54:00:a0:00:01"

// Sim is a running simulator.
type Sim struct {
	Dir  string
	Port int
}

// Address is the simulator's ipmi:// address with the given credentials.
func (s *Sim) Address(user, pass string) string {
	return fmt.Sprintf("ipmi://%s:%s@127.0.0.1:%d?cipher=3", user, pass, s.Port)
}

// FreeUDPPort returns a loopback UDP port nothing listens on.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePort returns a loopback UDP port nothing listens on.
func FreePort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// Config is one simulated BMC: where it listens, its administrator and the
// program it hands chassis commands to (ipmi_sim's chassis_control: called
// with "get NAME..." and "set NAME VALUE...").
type Config struct {
	Name           string
	Addr           string
	Port           int
	User, Password string
	Chassis        string
	// LAN is what the BMC reports of its LAN channel (Get LAN
	// Configuration Parameters); without it ipmi_sim reports no address.
	LAN LAN
	// SerialPort, when set, is the loopback TCP port where the simulator
	// serves QEMU's ipmi-bmc-extern (the "VM" codec) as the system
	// interface: the guest's in-band BMC (/dev/ipmi0 through KCS).
	SerialPort int
}

// LAN is a simulated BMC's LAN configuration: ipmi_sim asks its
// lan_config_program ("get NAME...", answered with NAME:value lines) for
// it, and WriteConfig writes that program.
type LAN struct {
	IP, Netmask, Gateway, MAC string
}

// script is the lan_config_program answering for l.
func (l LAN) script() string {
	return fmt.Sprintf(`#!/bin/sh
# ipmi_sim's lan_config_program: "get NAME..." prints NAME:value lines.
[ "$1" = get ] || exit 0
shift
for k in "$@"; do
  case $k in
  ip_addr) echo "ip_addr:%s" ;;
  ip_addr_src) echo "ip_addr_src:static" ;;
  mac_addr) echo "mac_addr:%s" ;;
  subnet_mask) echo "subnet_mask:%s" ;;
  default_gw_ip_addr) echo "default_gw_ip_addr:%s" ;;
  esac
done
`, l.IP, l.MAC, l.Netmask, l.Gateway)
}

// WriteConfig writes the simulator's lan.conf and emulator command file
// for c into dir and returns their paths.
func WriteConfig(dir string, c Config) (lanConf, emu string, err error) {
	conf := fmt.Sprintf(`name "%s"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
%s  endlan
  chassis_control "%s"
%s  user 1 true  ""   ""   user  10 none md2 md5 straight
  user 2 true  "%s" "%s" admin 10 none md2 md5 straight
`, c.Name, c.Addr, c.Port, opt(c.LAN.IP != "", fmt.Sprintf("    lan_config_program \"%s\"\n", filepath.Join(dir, "lancontrol.sh"))), c.Chassis,
		opt(c.SerialPort != 0, fmt.Sprintf("  serial kcs 127.0.0.1 %d codec VM\n", c.SerialPort)), c.User, c.Password)
	const emuCmds = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n"
	lanConf, emu = filepath.Join(dir, "lan.conf"), filepath.Join(dir, "bmc.emu")
	for p, body := range map[string]string{lanConf: conf, emu: emuCmds, filepath.Join(dir, "lancontrol.sh"): c.LAN.script()} {
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			return "", "", err
		}
	}
	return lanConf, emu, nil
}

// opt is s when cond holds, else nothing.
func opt(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

// Command is the simulator's command line for the files WriteConfig wrote
// (no persistence; state in stateDir).
func Command(lanConf, emu, stateDir string) []string {
	return []string{"ipmi_sim", "-c", lanConf, "-f", emu, "-n", "-s", stateDir}
}

// Start runs a simulator until the test ends.
func Start(t testing.TB) *Sim {
	t.Helper()
	s, stop, err := Run(t.TempDir(), FreeUDPPort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return s
}

// Run starts a simulator with its files in dir, listening on the loopback
// UDP port, and returns once it answers; stop ends it.
func Run(dir string, port int) (s *Sim, stop func(), err error) {
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, nil, fmt.Errorf("ipmi_sim not found (hack/install-deps.sh installs Debian's openipmi): %w", err)
	}
	s = &Sim{Dir: dir, Port: port}
	script := filepath.Join(s.Dir, "chassis.sh")
	// ipmi_sim's external chassis control: "get NAME..." prints NAME:value
	// lines, "set NAME value..." changes them.
	if err := os.WriteFile(script, []byte(`#!/bin/sh
d=`+s.Dir+`
op=$1; shift
case $op in
get) for k in "$@"; do printf '%s:%s\n' "$k" "$(cat "$d/$k" 2>/dev/null || echo 0)"; done ;;
set) while [ $# -gt 1 ]; do echo "$2" > "$d/$1"; echo "$1=$2" >> "$d/log"; shift 2; done ;;
esac
`), 0o755); err != nil {
		return nil, nil, err
	}
	for f, v := range map[string]string{"power": "0", "boot": "none", "log": ""} {
		if err := os.WriteFile(filepath.Join(s.Dir, f), []byte(v), 0o644); err != nil {
			return nil, nil, err
		}
	}
	lanConf, emu, err := WriteConfig(s.Dir, Config{Name: "anvilbmc", Addr: "127.0.0.1", Port: s.Port, User: User, Password: Password, Chassis: script,
		LAN: LAN{IP: "127.0.0.1", Netmask: "255.0.0.0", Gateway: "127.0.0.254", MAC: SimMAC}})
	if err != nil {
		return nil, nil, err
	}
	args := Command(lanConf, emu, filepath.Join(s.Dir, "state"))
	cmd := exec.Command(bin, args[1:]...)
	out, err := os.Create(filepath.Join(s.Dir, "sim.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, nil, err
	}
	stop = func() {
		cmd.Process.Kill() //nolint:errcheck // it may have exited
		cmd.Wait()         //nolint:errcheck // killed
		out.Close()
	}
	// Ready when a session opens (it binds its port at once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return s, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(filepath.Join(s.Dir, "sim.log"))
			return nil, nil, fmt.Errorf("ipmi_sim did not answer: %w\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Sim) ping() error {
	c, err := ipmi.NewClient("127.0.0.1", s.Port, User, Password)
	if err != nil {
		return err
	}
	c.WithInterface(ipmi.InterfaceLanplus).WithTimeout(time.Second).WithCipherSuiteID(types.CipherSuiteID3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	return c.Close(ctx)
}

// Log is the chassis commands the simulator carried out, in order,
// space-separated ("power=1 reset=1 boot=pxe").
func (s *Sim) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}
