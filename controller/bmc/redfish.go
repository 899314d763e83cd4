package bmc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Redfish drives a BMC through DMTF Redfish (DSP0266; the
// ComputerSystem schema's PowerState, Boot and the
// #ComputerSystem.Reset action): "redfish://user:password@host[:port]
// [/redfish/v1/Systems/ID][?insecure=true][&boot=efi|legacy]" over HTTPS,
// "redfish+http://…" over plain HTTP (labs). Without a system path the
// first member of /redfish/v1/Systems is used. Reset types are chosen
// among those the system advertises (ResetType@Redfish.AllowableValues);
// boot overrides are one-time (BootSourceOverrideEnabled "Once").
type Redfish struct {
	base      *url.URL // scheme://host[:port]
	system    string   // the ComputerSystem's path, "" until discovered
	user      string
	pass      string
	efi       bool
	client    *http.Client
	retryWait time.Duration
}

var _ Driver = (*Redfish)(nil)

// maxRedfishBody bounds what is read of one Redfish answer.
const maxRedfishBody = 1 << 20

func newRedfish(a Address, timeout time.Duration) *Redfish {
	tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: a.Insecure}, //nolint:gosec // opted in per BMC: most BMCs have self-signed certificates
		ResponseHeaderTimeout: timeout, MaxIdleConnsPerHost: 1}
	return &Redfish{base: &url.URL{Scheme: a.httpScheme, Host: a.hostPort()}, system: a.Path, user: a.User, pass: a.Password,
		efi: !a.LegacyBoot, client: &http.Client{Transport: tr, Timeout: timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		retryWait: 200 * time.Millisecond}
}

// call sends one request and decodes the JSON answer into out (nil: none
// wanted).
func (r *Redfish) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := *r.base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	req.SetBasicAuth(r.user, r.pass)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		// Connection refused, timeouts, TLS failures: no answer to act on.
		return fmt.Errorf("%w: %s %s: %v", ErrUnreachable, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRedfishBody))
	if err != nil {
		return fmt.Errorf("%w: %s %s: reading the answer: %v", ErrUnreachable, method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %s %s: %s", ErrAuth, method, path, resp.Status)
	case resp.StatusCode >= 300:
		return fmt.Errorf("%w: %s %s: %s: %s", ErrRefused, method, path, resp.Status, redfishMessage(b))
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrProtocol, method, path, err)
	}
	return nil
}

// redfishMessage is the first message of a Redfish error body, if any.
func redfishMessage(b []byte) string {
	var e struct {
		Error struct {
			Message  string `json:"message"`
			Extended []struct {
				Message string `json:"Message"`
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil {
		return "(no Redfish error body)"
	}
	if len(e.Error.Extended) > 0 && e.Error.Extended[0].Message != "" {
		return e.Error.Extended[0].Message
	}
	return e.Error.Message
}

// computerSystem is the part of the ComputerSystem resource used here.
type computerSystem struct {
	PowerState string `json:"PowerState"`
	Boot       struct {
		Target  string `json:"BootSourceOverrideTarget"`
		Enabled string `json:"BootSourceOverrideEnabled"`
	} `json:"Boot"`
	Actions struct {
		Reset struct {
			Target  string   `json:"target"`
			Allowed []string `json:"ResetType@Redfish.AllowableValues"`
		} `json:"#ComputerSystem.Reset"`
	} `json:"Actions"`
}

// systemPath finds the ComputerSystem when the address names none.
func (r *Redfish) systemPath(ctx context.Context) (string, error) {
	if r.system != "" {
		return r.system, nil
	}
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		} `json:"Members"`
	}
	if err := r.call(ctx, http.MethodGet, "/redfish/v1/Systems", nil, &coll); err != nil {
		return "", err
	}
	if len(coll.Members) == 0 || !strings.HasPrefix(coll.Members[0].ID, "/redfish/v1/Systems/") {
		return "", fmt.Errorf("%w: /redfish/v1/Systems lists no system", ErrProtocol)
	}
	r.system = coll.Members[0].ID
	return r.system, nil
}

func (r *Redfish) get(ctx context.Context) (string, computerSystem, error) {
	var cs computerSystem
	p, err := r.systemPath(ctx)
	if err != nil {
		return "", cs, err
	}
	return p, cs, r.call(ctx, http.MethodGet, p, nil, &cs)
}

func (r *Redfish) do(ctx context.Context, what string, fn func() error) error {
	if err := retryUnreachable(ctx, r.retryWait, fn); err != nil {
		return fmt.Errorf("redfish %s %s: %w", r.base.Host, what, err)
	}
	return nil
}

// reset posts the first of prefer that the system allows.
func (r *Redfish) reset(ctx context.Context, what string, prefer ...string) error {
	return r.do(ctx, what, func() error {
		p, cs, err := r.get(ctx)
		if err != nil {
			return err
		}
		return r.resetWith(ctx, p, cs, prefer...)
	})
}

func (r *Redfish) resetWith(ctx context.Context, p string, cs computerSystem, prefer ...string) error {
	kind := ""
	for _, t := range prefer {
		if len(cs.Actions.Reset.Allowed) == 0 || slices.Contains(cs.Actions.Reset.Allowed, t) {
			kind = t
			break
		}
	}
	if kind == "" {
		return fmt.Errorf("%w: the system allows reset types %v, none of %v", ErrRefused, cs.Actions.Reset.Allowed, prefer)
	}
	target := cs.Actions.Reset.Target
	if target == "" {
		target = p + "/Actions/ComputerSystem.Reset"
	}
	return r.call(ctx, http.MethodPost, target, map[string]string{"ResetType": kind}, nil)
}

// PowerOn implements Driver.
func (r *Redfish) PowerOn(ctx context.Context) error {
	return r.reset(ctx, "power on", "On", "ForceOn")
}

// PowerOff implements Driver (hard power off).
func (r *Redfish) PowerOff(ctx context.Context) error {
	return r.reset(ctx, "power off", "ForceOff", "GracefulShutdown")
}

// Reset implements Driver: a hard restart of a running system, power on of
// one that is off.
func (r *Redfish) Reset(ctx context.Context) error {
	return r.do(ctx, "reset", func() error {
		p, cs, err := r.get(ctx)
		if err != nil {
			return err
		}
		if cs.PowerState == "Off" {
			return r.resetWith(ctx, p, cs, "On", "ForceOn")
		}
		return r.resetWith(ctx, p, cs, "ForceRestart", "PowerCycle", "GracefulRestart")
	})
}

// Status implements Driver.
func (r *Redfish) Status(ctx context.Context) (Status, error) {
	var st Status
	err := r.do(ctx, "status", func() error {
		_, cs, err := r.get(ctx)
		if err != nil {
			return err
		}
		st = Status{Detail: "PowerState " + cs.PowerState}
		switch cs.PowerState {
		case "On", "PoweringOff", "Paused":
			st.Power = PowerOn
		case "Off", "PoweringOn":
			st.Power = PowerOff
		default:
			return fmt.Errorf("%w: PowerState %q", ErrProtocol, cs.PowerState)
		}
		if cs.Boot.Enabled == "Once" || cs.Boot.Enabled == "Continuous" {
			switch cs.Boot.Target {
			case "Pxe":
				st.NextBoot = BootPXE
			case "Hdd":
				st.NextBoot = BootDisk
			}
		}
		return nil
	})
	return st, err
}

// SetNextBoot implements Driver: a one-time boot source override.
func (r *Redfish) SetNextBoot(ctx context.Context, dev BootDevice) error {
	target := map[BootDevice]string{BootPXE: "Pxe", BootDisk: "Hdd"}[dev]
	if target == "" {
		return fmt.Errorf("%w: boot device %v", ErrInvalidAddress, dev)
	}
	mode := "Legacy"
	if r.efi {
		mode = "UEFI"
	}
	return r.do(ctx, "set next boot "+dev.String(), func() error {
		p, err := r.systemPath(ctx)
		if err != nil {
			return err
		}
		return r.call(ctx, http.MethodPatch, p, map[string]any{"Boot": map[string]string{
			"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": mode}}, nil)
	})
}
