//go:build !linux

package kexec

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// kernel is the real Syscalls; kexec exists only on Linux.
type kernel struct{}

var errNoKexec = fmt.Errorf("kexec on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func (kernel) FileLoad(*os.File, *os.File, string) error { return errNoKexec }
func (kernel) Reboot() error                             { return errNoKexec }

func load(Syscalls, Image) error { return errNoKexec }
