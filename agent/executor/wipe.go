// Package executor holds the agent's instruction executors (runner.Executor
// implementations): disk wipe and power actions. Each one acts only on what
// the agent is allowed to touch (package disks) and reports failure per disk,
// never swallowing an error.
package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/erase"
	"github.com/anvil-metal/anvil/agent/runner"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// ErrModeUnavailable is returned for erase modes this agent cannot perform.
var ErrModeUnavailable = errors.New("erase mode unavailable in this agent")

// Wipe erases the selected disks, all in parallel.
type Wipe struct {
	Allow *disks.Allowlist
	// Inventory returns the machine's current disks.
	Inventory func(ctx context.Context) (*anvilv1.Inventory, error)
	// Zeroed learns which disks read as zeroes after a verified full erase.
	Zeroed *ZeroLedger
	// ProtectLabel names the GPT partition that protects a disk from any
	// erase (disks.CheckProtected); empty disables the check.
	ProtectLabel string
}

var _ runner.Executor = (*Wipe)(nil)

// Execute implements runner.Executor.
func (w *Wipe) Execute(ctx context.Context, in *anvilv1.Instruction, p runner.Progress) (runner.Outcome, error) {
	mode := in.GetWipe().GetMode()
	switch mode {
	case anvilv1.EraseMode_ERASE_MODE_NONE:
		return runner.Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: "erase skipped (mode none)"}, nil
	case anvilv1.EraseMode_ERASE_MODE_QUICK:
	default:
		return runner.Outcome{}, fmt.Errorf("%s: %w: only none and quick are implemented so far; secure and full erase belong to the disk pipeline", mode, ErrModeUnavailable)
	}
	inv, err := w.Inventory(ctx)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("inventory for wipe: %w", err)
	}
	targets, err := w.Allow.Select(inv, in.GetWipe().GetDisks())
	if err != nil {
		return runner.Outcome{}, err
	}
	if len(targets) == 0 {
		return runner.Outcome{}, errors.New("no disk to erase: the inventory has no allowed non-removable disk")
	}
	for _, d := range targets {
		if err := disks.CheckProtected(d.GetPath(), w.ProtectLabel); err != nil {
			return runner.Outcome{}, fmt.Errorf("wipe refused: %w", err)
		}
	}
	results := make([]string, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, d := range targets {
		wg.Go(func() {
			if w.Zeroed != nil {
				w.Zeroed.Forget(d.GetPath())
			}
			res, err := erase.Quick(ctx, d.GetPath())
			if err != nil {
				errs[i] = fmt.Errorf("disk %s (serial %q): %w", d.GetPath(), d.GetSerial(), err)
				return
			}
			results[i] = fmt.Sprintf("%s: %s in %s", d.GetPath(), res.Method, res.Duration.Round(1e6))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return runner.Outcome{}, err
	}
	return runner.Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: "erased " + strings.Join(results, "; ")}, nil
}
