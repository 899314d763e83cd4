// Package tinyinit is the operating system of the anvil-tiny image: the
// uinit u-root's init starts (cmd/tiny-init). On every boot it
//
//  1. prepares the machine with agent/bootenv: kernel file systems, the
//     initramfs's kernel modules in dependency order, block devices
//     settled, links up and configured by DHCPv4 (RFC 2131);
//  2. looks for the NoCloud seed anvil-agent appended to the disk it
//     installed (package nocloud: GPT partition "cidata" or FAT label
//     "CIDATA", read with go-diskfs, no udev or mount);
//  3. takes the hostname from its meta-data and phones home: POST to the
//     url of anvil/phone-home.json with "Authorization: Bearer <token>"
//     (RFC 6750 §2.1) and a one-line body naming the hostname, kernel and
//     addresses, retrying with capped exponential backoff until the answer
//     is 200 OK.
//
// Every step is reported on the console, one "anvil-tiny: ..." line each.
// Without a seed, or with a seed without phone-home.json, it says so and
// stops; the caller then idles (u-root's init, its parent, exits when its
// uinit exits, and the kernel panics when init exits). The pure parts are
// here; tinyinit_linux.go holds the system calls.
package tinyinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/images/nocloud"
)

// Config is tiny-init's behaviour. Zero fields are taken from Defaults.
type Config struct {
	// Boot is agent/bootenv's configuration (modules directory, DHCP).
	Boot bootenv.Config
	// Backoff paces retries of the boot environment and of the phone
	// home.
	Backoff Backoff
	// Version is tiny-init's version, reported in the phone home.
	Version string
}

// Backoff is capped exponential backoff: Min, doubled after every failure
// up to Max. Timeout bounds one phone-home request.
type Backoff struct {
	Min, Max, Timeout time.Duration
}

// Next returns the delay after d.
func (b Backoff) Next(d time.Duration) time.Duration {
	if d < b.Min {
		return b.Min
	}
	return min(2*d, b.Max)
}

// Defaults returns the settings of the image.
func Defaults() Config {
	return Config{
		Boot:    bootenv.Defaults(),
		Backoff: Backoff{Min: time.Second, Max: 30 * time.Second, Timeout: 10 * time.Second},
		Version: "dev",
	}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Backoff.Min == 0 {
		c.Backoff.Min = d.Backoff.Min
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = d.Backoff.Max
	}
	if c.Backoff.Timeout == 0 {
		c.Backoff.Timeout = d.Backoff.Timeout
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	return c
}

// Validate reports every problem of c after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := c.Boot.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Backoff.Min < 0 || c.Backoff.Max < c.Backoff.Min {
		errs = append(errs, fmt.Errorf("backoff %v..%v: want 0 <= min <= max", c.Backoff.Min, c.Backoff.Max))
	}
	if c.Backoff.Timeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %v is negative", c.Backoff.Timeout))
	}
	return errors.Join(errs...)
}

// Outcome is how a boot ended.
type Outcome string

// Outcomes.
const (
	PhonedHome  Outcome = "phoned home"
	NoSeed      Outcome = "no seed"
	NoPhoneHome Outcome = "seed without phone-home.json"
)

// Facts are what the phone home reports.
type Facts struct {
	Hostname, InstanceID, Kernel, Version string
	Addresses                             []string
}

// Body is the phone-home request body: one line.
func Body(f Facts) string {
	parts := []string{"tiny image up: hostname " + orUnknown(f.Hostname), "kernel " + orUnknown(f.Kernel)}
	if f.InstanceID != "" {
		parts = append(parts, "instance-id "+f.InstanceID)
	}
	if len(f.Addresses) > 0 {
		parts = append(parts, "address "+strings.Join(f.Addresses, " "))
	}
	parts = append(parts, "anvil-tiny "+orUnknown(f.Version))
	return strings.Join(parts, ", ")
}

func orUnknown(s string) string {
	if s = strings.TrimSpace(s); s == "" {
		return "(unknown)"
	}
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

// ErrStatus is an answer other than 200 OK.
var ErrStatus = errors.New("phone home not accepted")

// PhoneHome posts body to p.URL with p.Token as bearer token until the
// answer is 200 OK, pacing attempts by b. It returns the number of
// attempts; it fails only when ctx ends.
func PhoneHome(ctx context.Context, client *http.Client, p nocloud.PhoneHome, body string, b Backoff, log *slog.Logger) (int, error) {
	delay := b.Min
	for attempt := 1; ; attempt++ {
		err := post(ctx, client, p, body, b.Timeout)
		if err == nil {
			return attempt, nil
		}
		log.Warn("phone home failed; retrying", "attempt", attempt, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return attempt, fmt.Errorf("phone home to %s: %w (last attempt: %w)", p.URL, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = b.Next(delay)
	}
}

// post makes one attempt.
func post(ctx context.Context, client *http.Client, p nocloud.PhoneHome, body string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("phone-home request for %s: %w", p.URL, err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", p.URL, err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil {
		return fmt.Errorf("POST %s: read the answer: %w", p.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %w: %s: %s", p.URL, ErrStatus, resp.Status, strings.TrimSpace(string(reply)))
	}
	return nil
}

// seedDevices returns the device paths of the block devices worth looking
// at for a seed: not loop, RAM or network block devices, which hold none
// in an installed system.
func seedDevices(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "nbd") {
			continue
		}
		out = append(out, "/dev/"+n)
	}
	return out
}

// addresses lists the leases' addresses.
func addresses(leases []bootenv.Lease) []string {
	var out []string
	for _, l := range leases {
		if l.Address != "" {
			out = append(out, l.Interface+"="+l.Address)
		}
	}
	return out
}

// parseUptime reads the first field of /proc/uptime: seconds since boot.
func parseUptime(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, errors.New("empty /proc/uptime")
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/uptime %q: %w", f[0], err)
	}
	return time.Duration(sec * float64(time.Second)), nil
}
