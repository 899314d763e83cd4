// Command anvil-lab-chassis is the chassis control program of a lab VM's
// BMC simulator (OpenIPMI's ipmi_sim, `chassis_control` in its lan.conf):
// ipmi_sim runs
//
//	anvil-lab-chassis QMP-SOCKET get NAME...        (prints NAME:VALUE lines)
//	anvil-lab-chassis QMP-SOCKET set NAME VALUE...
//
// for NAME power (0/1), reset (1) and boot (none, pxe, default = disk), and
// this drives the VM's QEMU over QMP through the lab's QMP driver
// (test/labkit/qmp) — the role sushy-tools plays for libvirt. So the controller speaks real
// IPMI over UDP to the simulator, and the power reaches QEMU.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/test/labkit/qmp"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "anvil-lab-chassis:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: anvil-lab-chassis QMP-SOCKET get NAME... | set NAME VALUE...")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := qmp.New(args[0], 15*time.Second)
	switch args[1] {
	case "get":
		st, err := d.Status(ctx)
		if err != nil {
			return err
		}
		for _, name := range args[2:] {
			v, err := get(st, name)
			if err != nil {
				return err
			}
			fmt.Printf("%s:%s\n", name, v)
		}
		return nil
	case "set":
		rest := args[2:]
		if len(rest)%2 != 0 {
			return fmt.Errorf("set %v: want NAME VALUE pairs", rest)
		}
		for i := 0; i < len(rest); i += 2 {
			if err := set(ctx, d, rest[i], rest[i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown operation %q", args[1])
}

func get(st bmc.Status, name string) (string, error) {
	switch name {
	case "power":
		if st.Power == bmc.PowerOn {
			return "1", nil
		}
		return "0", nil
	case "boot":
		switch st.NextBoot {
		case bmc.BootPXE:
			return "pxe", nil
		case bmc.BootDisk:
			return "default", nil
		}
		return "none", nil
	}
	return "", fmt.Errorf("get %q: unknown", name)
}

func set(ctx context.Context, d bmc.Driver, name, value string) error {
	switch {
	case name == "power" && value == "1":
		return d.PowerOn(ctx)
	case name == "power" && value == "0":
		return d.PowerOff(ctx)
	case name == "reset" && value == "1":
		return d.Reset(ctx)
	case name == "boot" && value == "pxe":
		return d.SetNextBoot(ctx, bmc.BootPXE)
	case name == "boot" && value == "default":
		return d.SetNextBoot(ctx, bmc.BootDisk)
	case name == "boot" && value == "none":
		return nil
	}
	return fmt.Errorf("set %s %q: unsupported", name, value)
}
