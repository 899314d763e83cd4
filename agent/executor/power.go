package executor

import (
	"context"

	"github.com/anvil-metal/anvil/agent/runner"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Power carries out Reboot and PowerOff. On a machine (boot mode) it asks
// the kernel to restart or power off after the controller acknowledged the
// instruction. In host mode the host is never touched: a reboot restarts the
// agent's loop (it registers afresh, as after a reboot) and a power-off
// stops the agent process.
type Power struct {
	HostMode bool
	// Off selects power-off instead of reboot.
	Off bool
}

var _ runner.Executor = (*Power)(nil)

// Execute implements runner.Executor; the action runs in Outcome.Then, after
// the acknowledgement of the REBOOTING/POWERING_OFF event.
func (p *Power) Execute(context.Context, *anvilv1.Instruction, runner.Progress) (runner.Outcome, error) {
	switch {
	case p.HostMode && p.Off:
		return runner.Outcome{Then: func(context.Context) error { return runner.ErrStop }}, nil
	case p.HostMode:
		return runner.Outcome{Then: func(context.Context) error { return runner.ErrRestart }}, nil
	}
	return runner.Outcome{Then: func(context.Context) error { return kernelReboot(p.Off) }}, nil
}

// Reboot syncs and restarts the machine through the firmware; it only
// returns on failure.
func Reboot(context.Context) error { return kernelReboot(false) }
