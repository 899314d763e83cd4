// Package executor holds the agent's instruction executors (runner.Executor
// implementations): disk wipe, image install and power actions. Each one
// acts only on what the agent is allowed to touch (package disks) and
// reports failure per disk, never swallowing an error.
package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/runner"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// ErrModeUnavailable is an erase mode this agent cannot perform.
var ErrModeUnavailable = errors.New("erase mode unavailable in this agent")

// ErrStepUnavailable is an erase step this agent has no implementation of.
var ErrStepUnavailable = errors.New("erase step unavailable in this agent")

// ProgressFunc receives bytes done and total of one disk's erase.
type ProgressFunc func(done, total uint64)

// EraseMethods are the erase implementations a Wipe uses, one per step
// kind; a nil one makes that step unavailable (the next step is tried).
// Each returns a short description of what it did.
type EraseMethods struct {
	// Steps are the erase steps except StepATA.
	Steps map[StepKind]func(ctx context.Context, path string, p ProgressFunc) (string, error)
	// ATA is StepATA: the ATA security erase with the Wipe's password
	// (Wipe.ata_password; empty means the agent's documented default,
	// ata.DefaultPassword). The password is never logged nor reported.
	ATA func(ctx context.Context, path, password string, p ProgressFunc) (string, error)
	// VerifyZero checks a disk reads as zeroes (random offsets plus the
	// first and last MiB).
	VerifyZero func(ctx context.Context, path string) error
	// Markers writes random markers and returns the check that they are
	// gone (the proof of a hardware or crypto erase).
	Markers func(path string) (gone func() error, err error)
	// Size reports a disk's size in bytes, for progress.
	Size func(path string) (int64, error)
}

// Wipe erases the selected disks, all in parallel.
type Wipe struct {
	Allow *disks.Allowlist
	// Inventory returns the machine's current disks.
	Inventory func(ctx context.Context) (*anvilv1.Inventory, error)
	Methods   EraseMethods
	// Zeroed learns which disks read as zeroes after a verified full erase.
	Zeroed *ZeroLedger
	// ProtectLabel names the GPT partition that protects a disk from any
	// erase (disks.CheckProtected); empty disables the check.
	ProtectLabel string
}

var _ runner.Executor = (*Wipe)(nil)

// Execute implements runner.Executor.
func (w *Wipe) Execute(ctx context.Context, in *anvilv1.Instruction, p runner.Progress) (runner.Outcome, error) {
	spec := in.GetWipe()
	mode := spec.GetMode()
	switch mode {
	case anvilv1.EraseMode_ERASE_MODE_NONE:
		return runner.Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: "erase skipped (mode none)"}, nil
	case anvilv1.EraseMode_ERASE_MODE_QUICK, anvilv1.EraseMode_ERASE_MODE_SECURE, anvilv1.EraseMode_ERASE_MODE_FULL:
	default:
		return runner.Outcome{}, fmt.Errorf("%s: %w", mode, ErrModeUnavailable)
	}
	inv, err := w.Inventory(ctx)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("inventory for wipe: %w", err)
	}
	targets, err := w.Allow.Select(inv, spec.GetDisks())
	if err != nil {
		return runner.Outcome{}, err
	}
	if len(targets) == 0 {
		return runner.Outcome{}, errors.New("no disk to erase: the inventory has no allowed non-removable disk")
	}
	// Disks named by the instruction must all be erasable; "every disk"
	// means every disk that is not protected.
	var skipped []string
	kept := targets[:0:0]
	for _, d := range targets {
		err := disks.CheckProtected(d.GetPath(), w.ProtectLabel)
		switch {
		case err == nil:
			kept = append(kept, d)
		case len(spec.GetDisks()) == 0 && errors.Is(err, disks.ErrProtected):
			skipped = append(skipped, d.GetPath()+" (protected)")
		default:
			return runner.Outcome{}, fmt.Errorf("wipe refused: %w", err)
		}
	}
	targets = kept
	if len(targets) == 0 {
		return runner.Outcome{}, fmt.Errorf("no disk to erase: every allowed disk is protected (%s)", strings.Join(skipped, ", "))
	}
	prog := newMultiProgress(p, len(targets))
	results := make([]string, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	note := func(string) {}
	if n, ok := p.(runner.Noter); ok {
		note = n.Note
	}
	for i, d := range targets {
		wg.Go(func() {
			results[i], errs[i] = w.eraseDisk(ctx, d, mode, spec.GetAllowFallback(), spec.GetAtaPassword(), prog.disk(i))
			if errs[i] != nil {
				errs[i] = fmt.Errorf("disk %s (serial %q): %w", d.GetPath(), d.GetSerial(), errs[i])
				note("erase failed: " + errs[i].Error())
				return
			}
			note("erased " + results[i])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return runner.Outcome{}, err
	}
	msg := mode.String() + ": " + strings.Join(results, "; ")
	if len(skipped) > 0 {
		msg += "; left alone: " + strings.Join(skipped, ", ")
	}
	return runner.Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: msg}, nil
}

// eraseDisk tries the planned steps in order until one succeeds and its
// verification passes. Every failed attempt is part of the error.
func (w *Wipe) eraseDisk(ctx context.Context, d *anvilv1.Disk, mode anvilv1.EraseMode, allowFallback bool, ataPassword string, p ProgressFunc) (string, error) {
	path := d.GetPath()
	if w.Zeroed != nil {
		w.Zeroed.Forget(path)
	}
	if w.Methods.Size != nil {
		if n, err := w.Methods.Size(path); err == nil {
			p(0, uint64(n))
		}
	}
	steps := PlanWipe(mode, KindOf(d), allowFallback)
	var tried []error
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		start := time.Now()
		what, err := w.runStep(ctx, path, s, ataPassword, p)
		if err != nil {
			tried = append(tried, fmt.Errorf("%s: %w", s.Kind, err))
			continue
		}
		desc := fmt.Sprintf("%s %s in %s, verified by %s", path, what, time.Since(start).Round(time.Millisecond), s.Verify())
		if s.Fallback {
			desc += fmt.Sprintf(" (fallback allowed by policy; no hardware erase: %v)", errors.Join(tried...))
		}
		if s.Verify() == verifyZeroSample && w.Zeroed != nil {
			w.Zeroed.MarkZeroed(path)
		}
		return desc, nil
	}
	if len(tried) == 0 {
		return "", fmt.Errorf("%s: no erase step for this disk", mode)
	}
	err := errors.Join(tried...)
	if mode == anvilv1.EraseMode_ERASE_MODE_SECURE && !allowFallback {
		err = fmt.Errorf("%w (a verified overwrite instead is not allowed: the controller's --erase-fallback is off)", err)
	}
	return "", err
}

// runStep runs one step with its verification.
func (w *Wipe) runStep(ctx context.Context, path string, s Step, ataPassword string, p ProgressFunc) (string, error) {
	run := w.Methods.Steps[s.Kind]
	if s.Kind == StepATA {
		run = nil
		if ata := w.Methods.ATA; ata != nil {
			run = func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				return ata(ctx, path, ataPassword, p)
			}
		}
	}
	if run == nil {
		return "", ErrStepUnavailable
	}
	var gone func() error
	if s.Verify() == verifyMarkers {
		if w.Methods.Markers == nil {
			return "", fmt.Errorf("%w: no marker verification", ErrStepUnavailable)
		}
		g, err := w.Methods.Markers(path)
		if err != nil {
			return "", fmt.Errorf("write verification markers: %w", err)
		}
		gone = g
	}
	what, err := run(ctx, path, p)
	if err != nil {
		return "", err
	}
	switch s.Verify() {
	case verifyMarkers:
		if err := gone(); err != nil {
			return "", fmt.Errorf("%s reported success but the data is still there: %w", what, err)
		}
	case verifyZeroSample:
		if w.Methods.VerifyZero == nil {
			return "", fmt.Errorf("%w: no zero verification", ErrStepUnavailable)
		}
		if err := w.Methods.VerifyZero(ctx, path); err != nil {
			return "", fmt.Errorf("%s reported success but verification failed: %w", what, err)
		}
	}
	return what, nil
}

// multiProgress sums the progress of disks erased in parallel.
type multiProgress struct {
	p           runner.Progress
	done, total []atomic.Uint64
}

func newMultiProgress(p runner.Progress, n int) *multiProgress {
	return &multiProgress{p: p, done: make([]atomic.Uint64, n), total: make([]atomic.Uint64, n)}
}

func (m *multiProgress) disk(i int) ProgressFunc {
	return func(done, total uint64) {
		m.done[i].Store(done)
		if total > 0 {
			m.total[i].Store(total)
		}
		var d, t uint64
		for j := range m.done {
			d += m.done[j].Load()
			t += m.total[j].Load()
		}
		m.p.Update(d, t)
	}
}
