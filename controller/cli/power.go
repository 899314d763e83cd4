package cli

import (
	"context"
	"flag"
	"io"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func machinePower() *command {
	return &command{
		name: "power", args: "ID on|off|reset|status", minArgs: 2, maxArgs: 2,
		summary: "Switch a machine's power through its BMC (on, off, reset) or show it (status); --next-boot sets the boot device first",
		setup: func(fs *flag.FlagSet) action {
			req := &anvilv1.PowerMachineRequest{}
			fs.Var(enumFlag[anvilv1.BootDevice]{&req.NextBoot}, "next-boot",
				"boot `device` first from the next boot on: "+strings.Join(enumChoices[anvilv1.BootDevice](), ", ")+" (default: unchanged)")
			return func(ctx context.Context, a *app, args []string) error {
				act, err := parseEnum[anvilv1.PowerAction](args[1])
				if err != nil {
					return usagef("power action: %v", err)
				}
				req.Id, req.Action = args[0], act
				resp, err := a.machines.PowerMachine(ctx, req)
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error {
					tw := newTable(w)
					row(tw, "MACHINE", "POWER", "NEXT BOOT", "BMC STATE", "EVENT")
					ev := ""
					if e := resp.GetEvent(); e != nil {
						ev = eventMessage(e)
					}
					row(tw, resp.GetMachineId(), title(resp.GetState()), title(resp.GetNextBoot()), resp.GetDetail(), ev)
					return tw.Flush()
				})
			}
		},
	}
}

func machineBMC() *command {
	return &command{
		name: "bmc", args: "ID (ADDRESS | --clear)", minArgs: 1, maxArgs: 2,
		summary: "Set the machine's BMC: ipmi://user:password@host[:port][?boot=efi|legacy][&cipher=N] (IPMI 2.0 over LAN) or redfish://user:password@host[:port][/redfish/v1/Systems/ID][?insecure=true] (Redfish; redfish+http:// without TLS)",
		setup: func(fs *flag.FlagSet) action {
			var clear bool
			fs.BoolVar(&clear, "clear", false, "remove the machine's BMC")
			return func(ctx context.Context, a *app, args []string) error {
				req := &anvilv1.SetMachineBMCRequest{Id: args[0]}
				switch {
				case clear && len(args) == 2:
					return usagef("give an address or --clear, not both")
				case !clear && len(args) == 1:
					return usagef("give the BMC address (ipmi://user:password@host or redfish://user:password@host) or --clear")
				case !clear:
					req.Address = args[1]
				}
				m, err := a.machines.SetMachineBMC(ctx, req)
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error {
					tw := newTable(w)
					row(tw, "ID", "BMC")
					row(tw, m.GetId(), m.GetBmcAddress())
					return tw.Flush()
				})
			}
		},
	}
}
