package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// ErrAuth is a BMC that refused the credentials (IPMI RAKP failure). It is
// never retried: a wrong password retried at full speed locks BMC
// accounts.
var ErrAuth = errors.New("BMC refused the credentials")

// IPMIDefaultPort is the RMCP port.
const IPMIDefaultPort = 623

// IPMI drives a BMC over IPMI 2.0 LAN (RMCP+, "lanplus"), one session per
// operation (BMCs have few session slots; a session left open holds one).
// Boot overrides are one-time (the next boot only), in the firmware mode
// of the address (?boot=efi, the default, or ?boot=legacy).
type IPMI struct {
	host       string
	port       int
	user, pass string
	efi        bool
	suites     []types.CipherSuiteID
	timeout    time.Duration
	// retryWait is the first wait between attempts; it doubles.
	retryWait time.Duration
}

var _ Driver = (*IPMI)(nil)

// newIPMI builds the driver of a parsed ipmi:// address.
func newIPMI(a Address, timeout time.Duration) *IPMI {
	suites := []types.CipherSuiteID{types.CipherSuiteID17, types.CipherSuiteID3}
	if a.CipherSuite != 0 {
		suites = []types.CipherSuiteID{types.CipherSuiteID(a.CipherSuite)}
	}
	return &IPMI{host: a.Host, port: a.Port, user: a.User, pass: a.Password, efi: !a.LegacyBoot, suites: suites,
		timeout: timeout, retryWait: 200 * time.Millisecond}
}

// do runs fn in a fresh session, retrying (with doubling waits) while the
// BMC is unreachable; refusals and wrong credentials are returned at once.
func (d *IPMI) do(ctx context.Context, what string, fn func(context.Context, *ipmi.Client) error) error {
	err := retryUnreachable(ctx, d.retryWait, func() error { return d.once(ctx, fn) })
	if err != nil {
		return fmt.Errorf("ipmi %s %s: %w", d.addr(), what, err)
	}
	return nil
}

func (d *IPMI) addr() string { return net.JoinHostPort(d.host, strconv.Itoa(d.port)) }

func (d *IPMI) once(ctx context.Context, fn func(context.Context, *ipmi.Client) error) error {
	c, err := ipmi.NewClient(d.host, d.port, d.user, d.pass)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	// Each exchange gets a share of the operation's time: a BMC that
	// ignores a cipher suite leaves room to try the next.
	c.WithInterface(ipmi.InterfaceLanplus).WithTimeout(d.timeout / 4).WithRetry(0).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator).WithCipherSuiteID(d.suites...)
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		return classifyIPMI("open a session", err)
	}
	defer c.Close(context.WithoutCancel(cctx)) //nolint:errcheck // the session times out on the BMC anyway
	if err := fn(cctx, c); err != nil {
		return classifyIPMI("", err)
	}
	return nil
}

// classifyIPMI maps go-ipmi's errors to the package's sentinels.
func classifyIPMI(what string, err error) error {
	if what != "" {
		what += ": "
	}
	var re *types.ResponseError
	switch {
	// go-ipmi joins the errors of every cipher suite it tried as text, so
	// the sentinel is matched by its words too.
	case errors.Is(err, ipmi.ErrRAKPAuthentication), strings.Contains(err.Error(), ipmi.ErrRAKPAuthentication.Error()):
		return fmt.Errorf("%w: %s%v", ErrAuth, what, err)
	case errors.As(err, &re):
		return fmt.Errorf("%w: %s%v", ErrRefused, what, err)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("%w: %sno answer: %v", ErrUnreachable, what, err)
	case isNetError(err):
		return fmt.Errorf("%w: %s%v", ErrUnreachable, what, err)
	}
	return fmt.Errorf("%w: %s%v", ErrProtocol, what, err)
}

func isNetError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// isTimeout reports a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// PowerOn implements Driver.
func (d *IPMI) PowerOn(ctx context.Context) error {
	return d.control(ctx, "power on", chassis.ChassisControlPowerUp)
}

// PowerOff implements Driver (hard power off).
func (d *IPMI) PowerOff(ctx context.Context) error {
	return d.control(ctx, "power off", chassis.ChassisControlPowerDown)
}

// Reset implements Driver: a hard reset of a running machine, power on of
// one that is off.
func (d *IPMI) Reset(ctx context.Context) error {
	return d.do(ctx, "reset", func(ctx context.Context, c *ipmi.Client) error {
		st, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		ctl := chassis.ChassisControlHardReset
		if !st.PowerIsOn {
			ctl = chassis.ChassisControlPowerUp
		}
		_, err = c.ChassisControl(ctx, ctl)
		return err
	})
}

func (d *IPMI) control(ctx context.Context, what string, ctl chassis.ChassisControl) error {
	return d.do(ctx, what, func(ctx context.Context, c *ipmi.Client) error {
		_, err := c.ChassisControl(ctx, ctl)
		return err
	})
}

// Status implements Driver: the chassis power state and the pending boot
// override, if any.
func (d *IPMI) Status(ctx context.Context) (Status, error) {
	var st Status
	err := d.do(ctx, "status", func(ctx context.Context, c *ipmi.Client) error {
		cs, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		st = Status{Power: PowerOff, Detail: "chassis power off"}
		if cs.PowerIsOn {
			st = Status{Power: PowerOn, Detail: "chassis power on"}
		}
		flags := &types.BootOptionParam_BootFlags{}
		if err := c.GetSystemBootOptionsParamFor(ctx, flags); err != nil {
			st.Detail += "; boot flags unreadable: " + err.Error()
			return nil
		}
		st.NextBoot = bootFromSelector(flags.BootDeviceSelector)
		return nil
	})
	return st, err
}

// bootFromSelector maps IPMI's boot device selector to a BootDevice.
func bootFromSelector(s types.BootDeviceSelector) BootDevice {
	switch s {
	case types.BootDeviceSelectorForcePXE:
		return BootPXE
	case types.BootDeviceSelectorForceHardDrive, types.BootDeviceSelectorForceHardDriveSafe:
		return BootDisk
	}
	return BootUnspecified
}

// SetNextBoot implements Driver: a one-time boot override.
func (d *IPMI) SetNextBoot(ctx context.Context, dev BootDevice) error {
	var sel types.BootDeviceSelector
	switch dev {
	case BootPXE:
		sel = types.BootDeviceSelectorForcePXE
	case BootDisk:
		sel = types.BootDeviceSelectorForceHardDrive
	default:
		return fmt.Errorf("%w: boot device %v", ErrInvalidAddress, dev)
	}
	bootType := types.BIOSBootTypeLegacy
	if d.efi {
		bootType = types.BIOSBootTypeEFI
	}
	return d.do(ctx, "set next boot "+dev.String(), func(ctx context.Context, c *ipmi.Client) error {
		return c.SetBootDevice(ctx, sel, bootType, false)
	})
}
