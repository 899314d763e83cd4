// Command anvil-phone-home runs on every boot of anvil's Debian image
// (anvil-phone-home.service): it reports to the anvil controller that the
// system booted, as images/debian/phonehome describes. Without a NoCloud
// seed, or a seed without anvil/phone-home.json, it says so and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/images/debian/phonehome"
)

func main() {
	giveUp := flag.Duration("give-up", time.Hour, "stop retrying after this long (exit 1)")
	seedWait := flag.Duration("seed-wait", 30*time.Second, "how long to wait for the seed device to appear")
	system := flag.String("system", "debian-12", "system name in the note")
	root := flag.String("root", "/", "root of /dev and /sys (a test seam)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, log, *root, *system, *seedWait, *giveUp); err != nil {
		log.Error("phone home failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, root, system string, seedWait, giveUp time.Duration) error {
	dev, mark, err := waitSeed(ctx, root, seedWait)
	if errors.Is(err, phonehome.ErrNoSeed) {
		log.Info("no NoCloud seed on this system, nothing to report", "why", err)
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("found the NoCloud seed", "device", dev, "by", mark)
	b, err := phonehome.ReadSeedFile(dev, os.TempDir(), phonehome.File)
	if errors.Is(err, fs.ErrNotExist) {
		log.Info("the seed has no "+phonehome.File+", nothing to report", "device", dev)
		return nil
	}
	if err != nil {
		return err
	}
	c, err := phonehome.ParseConfig(b)
	if err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("host name: %w", err)
	}
	kernel, err := phonehome.KernelRelease()
	if err != nil {
		return err
	}
	note := phonehome.Note(system, host, kernel)
	ctx, cancel := context.WithTimeout(ctx, giveUp)
	defer cancel()
	r := phonehome.Reporter{
		Client:  &http.Client{Timeout: 15 * time.Second},
		Log:     log,
		Backoff: phonehome.Backoff{Initial: time.Second, Max: time.Minute},
	}
	log.Info("phoning home", "url", c.URL, "note", note)
	start := time.Now()
	n, reply, err := r.Report(ctx, c, note)
	if err != nil {
		return err
	}
	log.Info("phoned home", "url", c.URL, "attempts", n, "took", time.Since(start).Round(time.Millisecond), "reply", reply)
	return nil
}

// waitSeed looks for the seed until it appears or wait has passed: udev
// may still be creating the links.
func waitSeed(ctx context.Context, root string, wait time.Duration) (string, string, error) {
	deadline := time.Now().Add(wait)
	for {
		dev, mark, err := phonehome.FindSeed(root)
		if !errors.Is(err, phonehome.ErrNoSeed) || time.Now().After(deadline) {
			return dev, mark, err
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
