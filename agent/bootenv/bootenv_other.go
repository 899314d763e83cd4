//go:build !linux

package bootenv

import (
	"context"
	"time"
)

// Prepare returns ErrUnsupported: the boot environment is Linux's.
func Prepare(context.Context, Config, ...Option) (*Result, error) { return nil, ErrUnsupported }

func setSystemClock(time.Time) error { return ErrUnsupported }
