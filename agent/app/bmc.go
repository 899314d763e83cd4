package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/anvil-metal/anvil/agent/bmcenroll"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// inBandBMC is the machine's BMC as the agent found it in-band, once per
// boot, for the inventory. The agent changes nothing on it unless the
// controller asks (RegisterResponse.bmc_enrollment, enroll).
type inBandBMC struct {
	done chan struct{}
	desc *anvilv1.BMC
}

// bmcDeviceWait is how long the agent waits for /dev/ipmi0 after the
// modules are loaded (ipmi_si fails to load with ENODEV when it finds no
// system interface, so a machine without a BMC costs no more than this).
const bmcDeviceWait = 3 * time.Second

// bmcBudget bounds the description and, separately, an enrollment: a BMC
// that hangs delays Register no longer (every IPMI command has its own
// 5 s timeout, and the loops stop when the budget is spent).
const bmcBudget = 30 * time.Second

// findBMC starts describing the in-band BMC in the background.
func findBMC(ctx context.Context, log *slog.Logger) *inBandBMC {
	b := &inBandBMC{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		ctx, cancel := context.WithTimeout(ctx, bmcBudget)
		defer cancel()
		b.desc = describeBMC(ctx, log)
	}()
	return b
}

// wait returns what findBMC found (nil when no BMC), waiting for it.
func (b *inBandBMC) wait(ctx context.Context) *anvilv1.BMC {
	if b == nil {
		return nil
	}
	select {
	case <-b.done:
		return b.desc
	case <-ctx.Done():
		return nil
	}
}

func describeBMC(ctx context.Context, log *slog.Logger) *anvilv1.BMC {
	c, err := bmcenroll.Open(ctx, bmcDeviceWait)
	if err != nil {
		if errors.Is(err, bmcenroll.ErrNoDevice) {
			log.Info("no in-band BMC", "err", err)
		} else {
			log.Warn("in-band BMC unusable", "err", err)
		}
		return nil
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing the device file
	desc, err := bmcenroll.Describe(ctx, c)
	if err != nil {
		log.Warn("in-band BMC: cannot read its LAN configuration", "err", err)
		return &anvilv1.BMC{EnrollError: err.Error()}
	}
	log.Info("in-band BMC", "ip", desc.GetIp(), "mac", desc.GetMac(), "vlan", desc.GetVlan(), "firmware", desc.GetFirmware(), "channel", desc.GetChannel())
	return desc
}

// enroll sets the user and password the controller chose on the BMC the
// agent described, and says what it did (the runner reports it).
func (b *inBandBMC) enroll(ctx context.Context, cred *anvilv1.BMCCredential, log *slog.Logger) (string, error) {
	desc := b.wait(ctx)
	if desc == nil || desc.GetChannel() == 0 {
		return "", errors.New("this agent found no usable in-band BMC")
	}
	if cred.GetUser() != bmcenroll.User {
		return "", fmt.Errorf("the controller asked for BMC user %q; the agent enrolls %q only", cred.GetUser(), bmcenroll.User)
	}
	ctx, cancel := context.WithTimeout(ctx, bmcBudget)
	defer cancel()
	c, err := bmcenroll.Open(ctx, bmcDeviceWait)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing the device file
	id, err := bmcenroll.Enroll(ctx, c, uint8(desc.GetChannel()), cred.GetPassword())
	if err != nil {
		log.Warn("in-band BMC enrollment failed", "err", err)
		return "", err
	}
	log.Info("in-band BMC enrolled", "user", bmcenroll.User, "user_id", id)
	return fmt.Sprintf("BMC user %s (ID %d) set in-band at %s, channel %d", bmcenroll.User, id, desc.GetIp(), desc.GetChannel()), nil
}
