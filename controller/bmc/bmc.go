// Package bmc switches machines' power and chooses their next boot device
// through a baseboard management controller. Driver is the small interface
// the controller uses; Open picks the implementation from the machine's BMC
// address.
//
// Two implementations, both for real servers: IPMI 2.0 over LAN
// ("ipmi://user:password@host"; ipmi.go, IPMI v2.0 rev 1.1 §13 RMCP+
// sessions and §28 chassis commands) and DMTF Redfish
// ("redfish://user:password@host", or redfish+http:// without TLS;
// redfish.go, DSP0266). Other types are refused with ErrUnsupported: never
// a silent success. That includes "qmp": the QEMU lab's fake BMC
// (test/labkit/qmp) is test code, and the lab's VMs are reached through
// the same two drivers (OpenIPMI's ipmi_sim or the lab's Redfish service,
// with QMP behind them).
package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors; every error that comes from a BMC (or from its address)
// wraps one of them.
var (
	// ErrUnsupported: the address names a BMC type without a driver.
	ErrUnsupported = errors.New("unsupported BMC type")
	// ErrInvalidAddress: the address cannot be parsed.
	ErrInvalidAddress = errors.New("invalid BMC address")
	// ErrUnreachable: the BMC could not be reached or did not answer in
	// time (connection refused, closed mid-command, timeout).
	ErrUnreachable = errors.New("BMC unreachable")
	// ErrRefused: the BMC answered with an error.
	ErrRefused = errors.New("BMC refused the command")
	// ErrProtocol: the BMC's answer is not valid for its protocol.
	ErrProtocol = errors.New("BMC protocol error")
)

// PowerState is whether the machine is on.
type PowerState int

// Power states.
const (
	PowerUnknown PowerState = iota
	PowerOn
	PowerOff
)

func (p PowerState) String() string {
	switch p {
	case PowerOn:
		return "on"
	case PowerOff:
		return "off"
	}
	return "unknown"
}

// BootDevice is the device the firmware tries first.
type BootDevice int

// Boot devices.
const (
	BootUnspecified BootDevice = iota
	BootPXE
	BootDisk
)

func (b BootDevice) String() string {
	switch b {
	case BootPXE:
		return "pxe"
	case BootDisk:
		return "disk"
	}
	return "unspecified"
}

// Status is a BMC's view of its machine.
type Status struct {
	Power PowerState
	// NextBoot is the device the next boot tries first; BootUnspecified when
	// no device has an explicit boot position.
	NextBoot BootDevice
	// Detail is the BMC's own word for the state (e.g. IPMI's "chassis
	// power on", Redfish's "PowerState On").
	Detail string
}

// Driver controls one machine's power and boot device. Implementations
// are safe for concurrent use, but the BMC itself may serve one request at
// a time: callers serialize calls to one BMC.
type Driver interface {
	PowerOn(ctx context.Context) error
	PowerOff(ctx context.Context) error
	Reset(ctx context.Context) error
	Status(ctx context.Context) (Status, error)
	// SetNextBoot chooses the device the next boot tries first.
	SetNextBoot(ctx context.Context, dev BootDevice) error
}

// Address is a parsed BMC address.
type Address struct {
	// Scheme is the BMC type: "ipmi", "redfish" or "redfish+http".
	Scheme string
	// Path is a Redfish BMC's system (/redfish/v1/Systems/ID); empty: the
	// service's first system.
	Path string
	// Host, Port, User and Password are an IPMI BMC's (port 623 unless
	// given).
	Host           string
	Port           int
	User, Password string
	// LegacyBoot: boot overrides ask for a legacy (BIOS) boot, not EFI.
	LegacyBoot bool
	// CipherSuite is the RMCP+ cipher suite to use; 0 tries 17
	// (HMAC-SHA256, AES) and then 3 (HMAC-SHA1, AES).
	CipherSuite int
	// Insecure: a Redfish BMC's TLS certificate is not verified.
	Insecure bool
	// httpScheme is a Redfish BMC's transport, "https" or "http".
	httpScheme string
	raw        *url.URL
}

// String returns the address without credentials (a password is shown as
// "xxxxx").
func (a Address) String() string {
	if a.raw == nil {
		return ""
	}
	return a.raw.Redacted()
}

// supportedTypes lists the BMC types Open accepts.
const supportedTypes = "ipmi, redfish, redfish+http"

// wantAddress is the shape of a supported address, for error messages.
const wantAddress = "ipmi://user:password@host or redfish://user:password@host"

// ParseAddress parses and checks a BMC address:
// "ipmi://user:password@host[:port][?boot=efi|legacy][&cipher=N]" or
// "redfish[+http]://user:password@host[:port][/redfish/v1/Systems/ID]
// [?insecure=true][&boot=efi|legacy]". Another type (qmp, idrac, ...)
// fails with ErrUnsupported; anything else wrong with ErrInvalidAddress.
func ParseAddress(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error repeats the input, which may hold a password: keep
		// only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Address{}, fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	shown := u.Redacted()
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "ipmi":
		return parseIPMI(u, shown)
	case "redfish", "redfish+http":
		return parseRedfish(u, scheme, shown)
	case "qmp":
		return Address{}, fmt.Errorf("%w %q in %s: the QMP driver is the QEMU lab's fake BMC (test/labkit/qmp), not a production driver; give the machine's BMC as %s", ErrUnsupported, scheme, shown, wantAddress)
	case "":
		return Address{}, fmt.Errorf("%w %q: no type; want %s", ErrInvalidAddress, shown, wantAddress)
	}
	return Address{}, fmt.Errorf("%w %q in %s (supported: %s)", ErrUnsupported, scheme, shown, supportedTypes)
}

// parseIPMI checks "ipmi://user:password@host[:port][?boot=efi|legacy][&cipher=N]".
func parseIPMI(u *url.URL, shown string) (Address, error) {
	if u.Opaque != "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return Address{}, fmt.Errorf("%w %q: want ipmi://user:password@host[:port][?boot=efi|legacy]", ErrInvalidAddress, shown)
	}
	a := Address{Scheme: "ipmi", Host: u.Hostname(), Port: IPMIDefaultPort}
	if err := withLogin(&a, u, shown, "an IPMI address needs a user (ipmi://user:password@host)"); err != nil {
		return Address{}, err
	}
	if len(a.User) > 16 || len(a.Password) > 20 {
		return Address{}, fmt.Errorf("%w %q: IPMI allows users of 16 and passwords of 20 bytes at most", ErrInvalidAddress, shown)
	}
	q := u.Query()
	for k := range q {
		if k != "boot" && k != "cipher" {
			return Address{}, fmt.Errorf("%w %q: unknown parameter %q (ipmi takes boot=efi|legacy and cipher=N)", ErrInvalidAddress, shown, k)
		}
	}
	if c := q.Get("cipher"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 19 {
			return Address{}, fmt.Errorf("%w %q: cipher=%q, want an RMCP+ cipher suite 1-19", ErrInvalidAddress, shown, c)
		}
		a.CipherSuite = n
	}
	return withBoot(a, u, shown)
}

// parseRedfish checks "redfish[+http]://user:password@host[:port]
// [/redfish/v1/Systems/ID][?insecure=true][&boot=efi|legacy]".
func parseRedfish(u *url.URL, scheme, shown string) (Address, error) {
	if u.Opaque != "" || u.Host == "" || u.Fragment != "" {
		return Address{}, fmt.Errorf("%w %q: want %s://user:password@host[:port][/redfish/v1/Systems/ID]", ErrInvalidAddress, shown, scheme)
	}
	a := Address{Scheme: scheme, Host: u.Hostname(), httpScheme: "https"}
	if scheme == "redfish+http" {
		a.httpScheme = "http"
	}
	if err := withLogin(&a, u, shown, "a Redfish address needs a user ("+scheme+"://user:password@host)"); err != nil {
		return Address{}, err
	}
	switch p := strings.TrimSuffix(u.Path, "/"); {
	case p == "":
	case strings.HasPrefix(p, "/redfish/v1/Systems/") && path.Clean(p) == p && strings.Count(p, "/") == 4:
		a.Path = p
	default:
		return Address{}, fmt.Errorf("%w %q: the path must be a system, /redfish/v1/Systems/ID", ErrInvalidAddress, shown)
	}
	q := u.Query()
	for k := range q {
		if k != "insecure" && k != "boot" {
			return Address{}, fmt.Errorf("%w %q: unknown parameter %q (redfish takes insecure=true and boot=efi|legacy)", ErrInvalidAddress, shown, k)
		}
	}
	switch q.Get("insecure") {
	case "", "false":
	case "true":
		a.Insecure = true
	default:
		return Address{}, fmt.Errorf("%w %q: insecure=%q, want true or false", ErrInvalidAddress, shown, q.Get("insecure"))
	}
	return withBoot(a, u, shown)
}

// withLogin takes the port (when given) and the user and password of a
// network BMC's address; noUser is the message when there is no user.
func withLogin(a *Address, u *url.URL, shown, noUser string) error {
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w %q: port %q", ErrInvalidAddress, shown, p)
		}
		a.Port = n
	}
	if u.User == nil || u.User.Username() == "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidAddress, shown, noUser)
	}
	a.User = u.User.Username()
	a.Password, _ = u.User.Password()
	return nil
}

// withBoot takes the boot=efi|legacy parameter and completes the address.
func withBoot(a Address, u *url.URL, shown string) (Address, error) {
	switch u.Query().Get("boot") {
	case "", "efi":
	case "legacy":
		a.LegacyBoot = true
	default:
		return Address{}, fmt.Errorf("%w %q: boot=%q, want efi or legacy", ErrInvalidAddress, shown, u.Query().Get("boot"))
	}
	a.raw = u
	return a, nil
}

// hostPort is host[:port] as a URL host.
func (a Address) hostPort() string {
	if a.Port == 0 {
		if strings.Contains(a.Host, ":") {
			return "[" + a.Host + "]"
		}
		return a.Host
	}
	return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// Full returns the address with its credentials, for the controller to
// keep (sealed) and to open the driver with; never for display.
func (a Address) Full() string {
	if a.raw == nil {
		return ""
	}
	return a.raw.String()
}

// Redact returns the address with any password masked, for display; an
// address that does not parse is returned as its scheme only.
func Redact(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		scheme, _, _ := strings.Cut(s, ":")
		return scheme + ":(unparsable)"
	}
	return u.Redacted()
}

// attempts bounds the tries of one operation on a BMC that does not answer
// (UDP loses packets; BMCs drop sessions and connections under load).
const attempts = 3

// retryUnreachable runs fn up to attempts times while it fails with
// ErrUnreachable, waiting wait, then twice as long, between tries; any
// other error (a refusal, wrong credentials) is returned at once.
func retryUnreachable(ctx context.Context, wait time.Duration, fn func() error) error {
	var last error
	for attempt := 1; attempt <= attempts; attempt++ {
		last = fn()
		if last == nil || !errors.Is(last, ErrUnreachable) || ctx.Err() != nil || attempt == attempts {
			return last
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(last, ctx.Err())
		}
		wait *= 2
	}
	return last
}

// Option configures a driver.
type Option func(*options)

type options struct {
	timeout time.Duration
}

// WithTimeout bounds each operation as a whole (connect, greeting and every
// command) unless the context's deadline is sooner. Default 10s.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// DefaultTimeout bounds an operation when WithTimeout is not given.
const DefaultTimeout = 10 * time.Second

// Open returns the driver for addr.
func Open(addr string, opts ...Option) (Driver, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("BMC timeout %v must be positive", o.timeout)
	}
	switch a.Scheme {
	case "ipmi":
		return newIPMI(a, o.timeout), nil
	case "redfish", "redfish+http":
		return newRedfish(a, o.timeout), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnsupported, a.Scheme)
}
