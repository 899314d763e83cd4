package anvilv1

import (
	"strings"
	"testing"
)

func TestValidatePowerRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  interface{ ValidateAll() error }
		want string // "" for valid
	}{
		{"power on", &PowerMachineRequest{Id: "m1", Action: PowerAction_POWER_ACTION_ON, NextBoot: BootDevice_BOOT_DEVICE_PXE}, ""},
		{"power status", &PowerMachineRequest{Id: "m1", Action: PowerAction_POWER_ACTION_STATUS}, ""},
		{"no action", &PowerMachineRequest{Id: "m1"}, "power action 0"},
		{"unknown action", &PowerMachineRequest{Id: "m1", Action: 99}, "power action 99"},
		{"unknown boot device", &PowerMachineRequest{Id: "m1", Action: PowerAction_POWER_ACTION_ON, NextBoot: 7}, "next boot device 7"},
		{"no machine", &PowerMachineRequest{Action: PowerAction_POWER_ACTION_ON}, "machine id is required"},
		{"bmc", &SetMachineBMCRequest{Id: "m1", Address: "qmp:///run/vm.qmp"}, ""},
		{"bmc cleared", &SetMachineBMCRequest{Id: "m1"}, ""},
		{"bmc with a space", &SetMachineBMCRequest{Id: "m1", Address: "qmp:///run/my vm.qmp"}, "white space"},
		{"bmc with a newline", &SetMachineBMCRequest{Id: "m1", Address: "qmp:///x\n"}, "control character"},
		{"bmc too long", &SetMachineBMCRequest{Id: "m1", Address: "qmp:///" + strings.Repeat("a", MaxBMCAddressBytes)}, "more than 1024"},
		{"bmc without machine", &SetMachineBMCRequest{Address: "qmp:///x"}, "machine id is required"},
	} {
		err := tc.req.ValidateAll()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
