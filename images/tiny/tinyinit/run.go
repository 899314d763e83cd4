package tinyinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/images/nocloud"
)

// Run does one boot's work (see the package comment) and returns how it
// ended. It retries what can succeed later (the boot environment, the
// phone home) until ctx ends; a seed that is there but unreadable is an
// error.
func Run(ctx context.Context, c Config, log *slog.Logger) (Outcome, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	c = c.withDefaults()
	start := time.Now()
	kernel, err := kernelRelease()
	if err != nil {
		log.Warn("kernel release unknown", "err", err)
	}
	log.Info("starting", "version", c.Version, "kernel", kernel)

	var seed *nocloud.Found
	var env *bootenv.Result
	for delay := c.Backoff.Min; ; delay = c.Backoff.Next(delay) {
		res, err := bootenv.Prepare(ctx, c.Boot, bootenv.WithLogger(log))
		// The seed is looked for as soon as the disks are known, even
		// when the network is not up yet: without one there is nothing
		// to wait for.
		if seed == nil && res != nil && res.Disks != nil {
			devs := seedDevices(res.Disks)
			f, ferr := nocloud.Find(devs)
			switch {
			case errors.Is(ferr, nocloud.ErrNotFound):
				log.Warn("no seed: nothing to phone home to", "why", ferr)
				return NoSeed, nil
			case ferr != nil:
				return "", fmt.Errorf("read the seed: %w", ferr)
			}
			seed = &f
			log.Info("seed found", "where", f.String())
			if f.Seed.PhoneHome == nil {
				log.Warn("the seed has no " + nocloud.PhoneHomeFile + ": not phoning home")
				return NoPhoneHome, nil
			}
		}
		if err == nil {
			env = res
			break
		}
		log.Warn("boot environment not ready; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("prepare the boot environment: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}

	md, err := nocloud.ParseMetaData(seed.Seed.MetaData)
	if err != nil {
		log.Warn("meta-data unreadable; going on without a hostname", "err", err)
	}
	if md.LocalHostname != "" {
		if err := setHostname(md.LocalHostname); err != nil {
			log.Warn("hostname not set", "hostname", md.LocalHostname, "err", err)
		} else {
			log.Info("hostname set", "hostname", md.LocalHostname)
		}
	}
	body := Body(Facts{Hostname: md.LocalHostname, InstanceID: md.InstanceID, Kernel: kernel, Version: c.Version, Addresses: addresses(env.Leases)})
	p := *seed.Seed.PhoneHome
	log.Info("phoning home", "url", p.URL)
	attempts, err := PhoneHome(ctx, &http.Client{}, p, body, c.Backoff, log)
	if err != nil {
		return "", err
	}
	up, err := uptime()
	if err != nil {
		log.Warn("uptime unknown", "err", err)
	}
	log.Info("phoned home", "url", p.URL, "attempts", attempts, "uptime", up.Round(10*time.Millisecond), "elapsed", time.Since(start).Round(10*time.Millisecond))
	return PhonedHome, nil
}
