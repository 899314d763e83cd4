package tinyinit

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	return nil
}

// uptime is the time since boot (/proc/uptime, proc(5)).
func uptime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, fmt.Errorf("read uptime: %w", err)
	}
	return parseUptime(string(b))
}

// Idle never returns. As PID 1 (tiny-init booted with init=) it reaps the
// orphans the kernel hands it; otherwise it sleeps.
func Idle() {
	for {
		if os.Getpid() == 1 {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(-1, &ws, 0, nil); err == nil || errors.Is(err, unix.EINTR) {
				continue
			}
		}
		time.Sleep(time.Hour)
	}
}
