package bootenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// blockDevices lists /sys/block below root.
func blockDevices(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "sys", "block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// settleDisks polls /sys/block every poll until it has not changed for
// cfg.SettleQuiet, and returns the devices then. Reaching cfg.SettleTimeout
// is not an error: probing may legitimately keep changing the set (a disk
// that flaps), and the inventory is collected again on every registration.
func settleDisks(ctx context.Context, cfg Config, o options, poll time.Duration) ([]string, error) {
	s := settler{quiet: cfg.SettleQuiet}
	deadline := time.Now().Add(cfg.SettleTimeout)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		names, err := blockDevices(o.root)
		if err != nil {
			return nil, err
		}
		if s.observe(time.Now(), names) {
			return names, nil
		}
		if time.Now().After(deadline) {
			o.log.Warn("block devices still changing; going on", "timeout", cfg.SettleTimeout, "disks", names)
			return names, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for block devices: %w", ctx.Err())
		case <-t.C:
		}
	}
}
