package executor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// kernelReboot syncs filesystems and restarts or powers off the machine.
// It only returns on failure.
func kernelReboot(off bool) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if off {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot(%#x): %w", cmd, err)
	}
	return nil
}
