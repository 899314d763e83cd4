package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/agent/ctrladdr"
	"github.com/anvil-metal/anvil/controller/pki"
)

// prepareBoot readies the RAM-booted machine (file systems, modules, disks,
// DHCP: bootenv.Prepare, with opts), then makes its clock plausible from the
// certificate chain of the first controller replica that answers
// (bootenv.SeedClock), retrying until one does: nothing else can work
// before.
func prepareBoot(ctx context.Context, cfg Config, caPEM []byte, addrs ctrladdr.List, log *slog.Logger, opts ...bootenv.Option) error {
	log = log.With("phase", "boot")
	if cfg.DebugShell {
		if err := bootenv.StartDebugShell(ctx, bootenv.DebugShellPath, log); err != nil {
			log.Error("no debug shell", "path", bootenv.DebugShellPath, "err", err)
		}
	}
	res, err := bootenv.Prepare(ctx, bootenv.Defaults(), append([]bootenv.Option{bootenv.WithLogger(log)}, opts...)...)
	if err != nil {
		return fmt.Errorf("prepare the boot environment: %w", err)
	}
	// The agent may wait in the pool for days: its DHCP leases are
	// renewed for as long as it runs.
	go bootenv.KeepLeases(ctx, res.Leases, log)
	cc := bootenv.ClockConfig{Addrs: addrs}
	if len(caPEM) > 0 {
		cc.Roots = x509.NewCertPool()
		if !cc.Roots.AppendCertsFromPEM(caPEM) {
			return errors.New("CA file holds no certificate")
		}
	}
	if cfg.CAFingerprint != "" {
		fp, err := pki.ParseFingerprint(cfg.CAFingerprint)
		if err != nil {
			return err
		}
		cc.Fingerprint = fp
	}
	bo := backoff.Default()
	for attempt := 0; ; attempt++ {
		step, err := bootenv.SeedClock(ctx, cc, bootenv.WithLogger(log))
		if err == nil {
			log.Info("clock checked against the controller's certificate", "clock", step.After.UTC().Format(time.RFC3339), "stepped", step.Stepped)
			return nil
		}
		log.Warn("clock check failed; retrying", "attempt", attempt, "err", err)
		if err := bo.Sleep(ctx, attempt); err != nil {
			return fmt.Errorf("seed the clock from the controller: %w", err)
		}
	}
}
