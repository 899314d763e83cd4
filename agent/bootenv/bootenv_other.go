//go:build !linux

package bootenv

import (
	"context"
	"log/slog"
	"time"
)

// Prepare returns ErrUnsupported: the boot environment is Linux's.
func Prepare(context.Context, Config, ...Option) (*Result, error) { return nil, ErrUnsupported }

func setSystemClock(time.Time) error { return ErrUnsupported }

// StartDebugShell returns ErrUnsupported: the debug shell is Linux's.
func StartDebugShell(context.Context, string, *slog.Logger) error { return ErrUnsupported }

// PhysicalLinks returns ErrUnsupported: links are listed through Linux's
// rtnetlink.
func PhysicalLinks() ([]string, error) { return nil, ErrUnsupported }
