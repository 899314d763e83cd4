package bmcenroll

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
)

// DevicePath is the kernel's first IPMI device (ipmi_devintf).
const DevicePath = "/dev/ipmi0"

// ErrNoDevice is returned when the machine shows no in-band BMC: no IPMI
// device appeared (no BMC, or one the kernel's ipmi_si did not find).
var ErrNoDevice = errors.New("no in-band BMC (" + DevicePath + ")")

// Open connects to the in-band BMC through DevicePath, waiting up to wait
// for the device to appear (ipmi_si probes the system interface after its
// module is loaded, which takes a moment). Close the client when done.
func Open(ctx context.Context, wait time.Duration) (*ipmi.Client, error) {
	if err := waitDevice(ctx, DevicePath, DriverPath, wait); err != nil {
		return nil, err
	}
	c, err := ipmi.NewOpenClient()
	if err != nil {
		return nil, fmt.Errorf("in-band BMC: %w", err)
	}
	c.WithTimeout(5 * time.Second)
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("in-band BMC %s: %w", DevicePath, err)
	}
	return c, nil
}

// DriverPath is where the kernel shows its system interface driver: absent
// when ipmi_si found no BMC (it then refuses to load, ENODEV) and is not
// built in.
const DriverPath = "/sys/module/ipmi_si"

// waitDevice waits up to wait for path to exist, and not at all when the
// driver that would create it is not there.
func waitDevice(ctx context.Context, path, driver string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return nil
		}
		if _, derr := os.Stat(driver); errors.Is(derr, fs.ErrNotExist) && errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s not there and no IPMI system interface driver (%s)", ErrNoDevice, path, driver)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("in-band BMC: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s not there %v after start", ErrNoDevice, path, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
