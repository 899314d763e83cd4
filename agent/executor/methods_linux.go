package executor

import (
	"context"
	"fmt"
	"os"

	"github.com/anvil-metal/anvil/agent/ata"
	"github.com/anvil-metal/anvil/agent/blockdev"
	"github.com/anvil-metal/anvil/agent/erase"
	"github.com/anvil-metal/anvil/agent/nvme"
)

// ataErase runs the ATA security erase (enhanced when supported) with the
// Wipe's password (empty: ata.DefaultPassword), first unlocking a drive an
// interrupted erase left locked. A frozen or unsupported drive fails this
// step; the planner decides what follows. The result names which password
// was used, never the password.
func ataErase(ctx context.Context, path, password string, p ProgressFunc) (string, error) {
	known, err := ata.KnownPasswords(password)
	if err != nil {
		return "", err
	}
	t, err := ata.OpenSGIO(path)
	if err != nil {
		return "", err
	}
	defer t.Close()
	res, err := (&ata.Disk{T: t, Name: path}).SecureErase(ctx, known, p)
	if err != nil {
		return "", err
	}
	return res.String(), nil
}

// nvmeErase runs the strongest erase the NVMe controller advertises
// (sanitize, else Format NVM; crypto when offered).
func nvmeErase(ctx context.Context, path string, p ProgressFunc) (string, error) {
	d, err := nvme.Open(path)
	if err != nil {
		return "", err
	}
	defer d.Close()
	plan, err := d.Plan()
	if err != nil {
		return "", err
	}
	if err := d.Erase(ctx, plan, p); err != nil {
		return "", err
	}
	return plan.Method, nil
}

// Tunables of the erase verification and overwrite.
const (
	// verifySamples random 4 KiB blocks are read after a zeroing erase,
	// besides the first and last MiB.
	verifySamples = 1024
	// markerCount markers are spread over a disk before a hardware erase.
	markerCount = 64
	// overwriteDepth O_DIRECT writes are in flight during an overwrite.
	// Each 8 MiB write is already split into many device requests; on a
	// loop device backed by a file, 4 in flight measured half as fast
	// as 1 or 2 (medians of 6 interleaved runs: 2.2 s, 1.1 s, 1.0 s for
	// 2 GiB), their pages reaching the backing file out of order.
	overwriteDepth = 2
)

func describe(r erase.Result, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%d MiB, %.0f MB/s)", r.Method, r.Bytes>>20, float64(r.Bytes)/max(r.Duration.Seconds(), 1e-3)/1e6), nil
}

// DefaultMethods wires the erase implementations of this agent.
func DefaultMethods() EraseMethods {
	return EraseMethods{
		Steps: map[StepKind]func(context.Context, string, ProgressFunc) (string, error){
			StepQuick: func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				res, err := erase.Quick(ctx, path)
				if err != nil {
					return "", err
				}
				p(uint64(res.Bytes), uint64(res.Bytes))
				return res.Method, nil
			},
			StepZeroOut: func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				return describe(erase.ZeroOut(ctx, path, erase.Progress(p)))
			},
			StepOverwrite: func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				return describe(erase.Overwrite(ctx, path, overwriteDepth, erase.Progress(p)))
			},
			StepNVMe: nvmeErase,
			StepSecDiscard: func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				return describe(erase.Discard(ctx, path, true, erase.Progress(p)))
			},
		},
		ATA:        ataErase,
		VerifyZero: func(_ context.Context, path string) error { return erase.VerifySample(path, verifySamples) },
		Markers: func(path string) (func() error, error) {
			m, err := erase.WriteMarkers(path, markerCount)
			if err != nil {
				return nil, err
			}
			return m.CheckGone, nil
		},
		Size: func(path string) (int64, error) {
			d, err := blockdev.Open(path, os.O_RDONLY)
			if err != nil {
				return 0, fmt.Errorf("size of %s: %w", path, err)
			}
			defer d.Close()
			return d.Size, nil
		},
	}
}
