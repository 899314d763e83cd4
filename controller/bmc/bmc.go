// Package bmc switches machines' power and chooses their next boot device
// through a baseboard management controller. Driver is the small interface
// the controller uses; Open picks the implementation from the machine's BMC
// address.
//
// Three implementations: IPMI 2.0 over LAN ("ipmi://user:password@host";
// ipmi.go, IPMI v2.0 rev 1.1 §13 RMCP+ sessions and §28 chassis commands)
// and DMTF Redfish ("redfish://user:password@host"; redfish.go, DSP0266)
// for real servers, and QMP ("qmp:///path/to/vm.qmp"): a fake BMC for the
// QEMU lab that speaks the QEMU Machine Protocol (JSON over the VM's QMP
// unix socket; QEMU docs/interop/qmp-spec) to the QEMU process running the
// machine. Other types are refused with ErrUnsupported: never a silent
// success.
//
// # Power model (QMP)
//
// QMP cannot start a QEMU process, so "off" is a VM frozen at reset: QEMU
// must run with "-no-shutdown" (a guest power-off stops the VM and leaves
// QEMU alive instead of exiting) and "-qmp unix:PATH,server=on,wait=off",
// optionally with "-S" to start off (QEMUArgs returns these flags).
//
//   - PowerOff: "stop", then "system_reset" (waiting for QEMU's RESET
//     event): the CPUs do not run and the next start is a cold boot.
//   - PowerOn: nothing when the VM runs already; else "system_reset", then
//     "cont".
//   - Reset: "system_reset", then "cont" unless the VM runs; an off VM is
//     thus powered on (as most BMCs do).
//   - Status: "query-status": QMP status "running" (or "suspended", an
//     ACPI S3 sleep: power is on) is on, every other status off —
//     "prelaunch" (-S, or reset while stopped), "paused" (stop), "shutdown"
//     (the guest powered off under -no-shutdown), and error stops such as
//     "guest-panicked" or "internal-error". Status.Detail keeps QMP's word.
//
// # Next boot device
//
// QEMU has no QMP command for a one-time boot override ("-boot once" is
// command-line only, and only for the legacy boot order), but a device's
// "bootindex" property can be changed at runtime with "qom-set", and QEMU
// rebuilds the firmware's "bootorder" fw_cfg file from the boot indexes on
// every system reset (fw_cfg_machine_reset). SeaBIOS reads that file at
// boot (OVMF does too, but the UEFI path is not tested here), so
// SetNextBoot renumbers the boot indexes of the VM's devices that have one — NICs (a "netdev" and a "mac" property) first for
// BootPXE, disks (a "drive" property) first for BootDisk, every other
// device after them — under /machine/peripheral and
// /machine/peripheral-anon. Verified against QEMU 7.2 with SeaBIOS (see the
// tests: SeaBIOS's debug console shows the order it reads and the device it
// boots).
//
// Limits, stated plainly:
//   - The order is persistent, like Redfish's BootSourceOverrideEnabled
//     "Continuous": every later boot (also a reboot by the guest) uses it
//     until SetNextBoot changes it. There is no "once".
//   - It takes effect at the next reset; PowerOn and Reset always reset, so
//     a SetNextBoot before them applies to the boot they start. It does not
//     survive a restart of the QEMU process (the command line rules again).
//   - Only devices QEMU gives a "bootindex" property (virtio-net, e1000,
//     virtio-blk, scsi-hd, ide-hd, nvme, ...) can be ordered. A VM with no
//     NIC (or no disk) has nothing to put first: SetNextBoot fails with
//     ErrRefused. Changing indexes takes two qom-set passes (QEMU refuses
//     duplicate indexes); a failure between them leaves a consistent but
//     unintended order, which the next SetNextBoot corrects.
//   - Devices without a bootindex on the command line get one from the
//     first SetNextBoot (tested). Mixing with "-boot order=" is not tested:
//     give the lab's devices bootindex properties instead.
//   - What happens when the first device fails to boot (a PXE boot without
//     an answer) is up to the firmware; SeaBIOS moves on to the next entry
//     of the order, as it does for the blank disk in the tests.
//   - UEFI VMs (OVMF, found by its pflash drive) are left alone: with boot
//     indexes QEMU hands OVMF a bootorder, and OVMF then rewrites BootOrder
//     at every boot and deletes the entries it does not match — the boot
//     entry anvil-agent keeps for the installed disk among them. A UEFI
//     VM's boot order is its NVRAM's, as on a server: the network first
//     (the agent keeps it so), so SetNextBoot(BootPXE) succeeds without a
//     change and SetNextBoot(BootDisk) is refused (that would need the
//     firmware's BootNext variable); Status reports no next boot device.
//
// # Connections
//
// Every operation opens its own QMP connection, negotiates capabilities and
// closes it, so a restarted QEMU is picked up and no connection is held
// between calls. QEMU serves one QMP client per socket at a time: while
// another client is connected the greeting does not come, and the call
// fails with ErrUnreachable after the timeout (WithTimeout, default 10s).
// Callers serialize operations on one BMC themselves.
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
	// Detail is the BMC's own word for the state (QMP's status).
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
	// Scheme is the BMC type, e.g. "qmp" or "ipmi".
	Scheme string
	// Path is the QMP socket path.
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
const supportedTypes = "qmp, ipmi, redfish, redfish+http"

// ParseAddress parses and checks a BMC address. Supported: "qmp:///abs/path"
// (a unix socket path; "qmp:/abs/path" is accepted too). A known type
// without a driver (ipmi, redfish, ...) fails with ErrUnsupported; anything
// else with ErrInvalidAddress.
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
	case "qmp":
	case "ipmi":
		return parseIPMI(u, shown)
	case "redfish", "redfish+http":
		return parseRedfish(u, scheme, shown)
	case "":
		return Address{}, fmt.Errorf("%w %q: no type; want qmp:///path/to/vm.qmp", ErrInvalidAddress, shown)
	default:
		return Address{}, fmt.Errorf("%w %q in %s (supported: %s)", ErrUnsupported, scheme, shown, supportedTypes)
	}
	if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || u.User != nil {
		return Address{}, fmt.Errorf("%w %q: a qmp address is a local socket: qmp:///path/to/vm.qmp", ErrInvalidAddress, shown)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Address{}, fmt.Errorf("%w %q: qmp takes no query or fragment", ErrInvalidAddress, shown)
	}
	if !path.IsAbs(u.Path) || path.Clean(u.Path) != u.Path {
		return Address{}, fmt.Errorf("%w %q: the socket path must be absolute and clean", ErrInvalidAddress, shown)
	}
	return Address{Scheme: scheme, Path: u.Path, raw: &url.URL{Scheme: scheme, Path: u.Path}}, nil
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
	case "qmp":
		return NewQMP(a.Path, o.timeout), nil
	case "ipmi":
		return newIPMI(a, o.timeout), nil
	case "redfish", "redfish+http":
		return newRedfish(a, o.timeout), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnsupported, a.Scheme)
}

// QEMUArgs returns the QEMU command-line flags the QMP driver relies on: the
// QMP socket at socket, -no-shutdown, and -S when the VM should start
// powered off. Give devices boot indexes (bootindex=N) so that the firmware
// honours SetNextBoot from the first boot on; see the package comment.
func QEMUArgs(socket string, startOff bool) []string {
	args := []string{"-qmp", "unix:" + socket + ",server=on,wait=off", "-no-shutdown"}
	if startOff {
		args = append(args, "-S")
	}
	return args
}
