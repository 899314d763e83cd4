package bootenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// StartDebugShell runs the shell at path on the console (the agent's own
// standard input and output) in a session of its own, and starts it again
// whenever it exits, until ctx ends. It is only ever called when the kernel
// command line enables it (anvil.debug=1): the image carries the shell, but
// nothing runs it otherwise. A missing shell is an error at once.
func StartDebugShell(ctx context.Context, path string, log *slog.Logger) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	go func() {
		for ctx.Err() == nil {
			cmd := exec.CommandContext(ctx, path)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			log.Warn("debug shell on the console (anvil.debug=1)", "shell", path)
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) && ctx.Err() == nil {
				log.Error("debug shell", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}
