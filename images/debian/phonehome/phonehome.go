// Package phonehome is the installed system's side of anvil's phone-home
// (controller/boot's POST /phone-home): it finds the NoCloud seed that
// anvil-agent wrote (cloud-init's NoCloud datasource: a filesystem
// labelled CIDATA, here on a GPT partition named "cidata"), reads
// anvil/phone-home.json, {"url": ..., "token": ...}, and POSTs a one-line
// note to url with "Authorization: Bearer <token>" until the controller
// answers 200 OK, backing off between attempts.
//
// This file is the pure core: the settings, the note, the retry loop and
// the FAT volume label; seed_linux.go finds and mounts the seed.
package phonehome

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// File is where the settings are on the seed filesystem.
const File = "anvil/phone-home.json"

// ErrNoSeed is a system without a NoCloud seed: nothing to report to.
var ErrNoSeed = errors.New("no NoCloud seed (filesystem label CIDATA or GPT partition cidata)")

// Config is anvil/phone-home.json.
type Config struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// ParseConfig reads and checks anvil/phone-home.json.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", File, err)
	}
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("empty url"))
	case err != nil:
		errs = append(errs, fmt.Errorf("url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("url %q: want http(s)://host/...", c.URL))
	}
	if strings.TrimSpace(c.Token) == "" || strings.ContainsAny(c.Token, "\r\n") {
		errs = append(errs, errors.New("token empty or spanning lines"))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("%s: %w", File, err)
	}
	return c, nil
}

// Note is the report's body, one line (the controller keeps up to 1 KiB of
// it in the machine's event).
func Note(system, hostname, kernel string) string {
	return fmt.Sprintf("%s up: hostname %s, kernel %s", system, hostname, kernel)
}

// Backoff is the wait between attempts: Initial, doubling up to Max, each
// wait drawn from [d/2, d] so a rack of machines booting together spreads
// out.
type Backoff struct {
	Initial, Max time.Duration
}

// Wait is the wait after the given failed attempt (1-based); rnd returns a
// number in [0, 1).
func (b Backoff) Wait(attempt int, rnd func() float64) time.Duration {
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + time.Duration(rnd()*float64(d/2))
}

// Reporter posts the note.
type Reporter struct {
	Client  *http.Client
	Log     *slog.Logger
	Backoff Backoff
	// Rand and Sleep are test seams (default: math/rand/v2 and a timer).
	Rand  func() float64
	Sleep func(context.Context, time.Duration) error
}

// StatusError is a reply other than 200 OK.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body)
}

// Report POSTs note to c.URL until the answer is 200 OK, or ctx ends. It
// returns the number of attempts and, on success, the controller's reply.
func (r Reporter) Report(ctx context.Context, c Config, note string) (attempts int, reply string, err error) {
	rnd, sleep := r.Rand, r.Sleep
	if rnd == nil {
		rnd = rand.Float64
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	for attempts = 1; ; attempts++ {
		reply, err = r.post(ctx, c, note)
		if err == nil {
			return attempts, reply, nil
		}
		if ctx.Err() != nil {
			return attempts, "", fmt.Errorf("phone home to %s: gave up after %d attempts: %w", c.URL, attempts, err)
		}
		wait := r.Backoff.Wait(attempts, rnd)
		r.Log.Warn("phone home failed, retrying", "url", c.URL, "attempt", attempts, "err", err, "retry_in", wait.Round(time.Millisecond))
		if serr := sleep(ctx, wait); serr != nil {
			return attempts, "", fmt.Errorf("phone home to %s: gave up after %d attempts: %w (last: %w)", c.URL, attempts, serr, err)
		}
	}
}

func (r Reporter) post(ctx context.Context, c Config, note string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, strings.NewReader(note+"\n"))
	if err != nil {
		return "", fmt.Errorf("POST %s: %w", c.URL, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("User-Agent", "anvil-phone-home")
	resp, err := r.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("POST %s: read reply: %w", c.URL, err)
	}
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", &StatusError{Code: resp.StatusCode, Body: text}
	}
	return text, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// FATLabel returns the volume label in a FAT boot sector (Microsoft FAT
// specification 1.03: BS_VolLab at offset 71 for FAT32, at 43 for
// FAT12/16, BS_BootSig 0x29 before it when present), trimmed; ok is false
// when bs is no FAT boot sector.
func FATLabel(bs []byte) (label string, ok bool) {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
		return "", false
	}
	if bps := binary.LittleEndian.Uint16(bs[11:]); bps != 512 && bps != 1024 && bps != 2048 && bps != 4096 {
		return "", false
	}
	fat16Sectors := binary.LittleEndian.Uint16(bs[22:])
	sig, lab := 38, 43 // FAT12/16
	if fat16Sectors == 0 {
		sig, lab = 66, 71 // FAT32: BPB_FATSz16 is 0
	}
	if bs[sig] != 0x29 {
		return "", false
	}
	return strings.TrimRight(string(bs[lab:lab+11]), " \x00"), true
}
