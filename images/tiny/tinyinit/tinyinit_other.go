//go:build !linux

package tinyinit

import (
	"errors"
	"time"
)

var errUnsupported = errors.New("tiny-init runs on Linux only")

func kernelRelease() (string, error) { return "", errUnsupported }
func setHostname(string) error       { return errUnsupported }
func uptime() (time.Duration, error) { return 0, errUnsupported }

// Idle never returns.
func Idle() {
	for {
		time.Sleep(time.Hour)
	}
}
