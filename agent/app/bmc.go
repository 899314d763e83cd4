package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/anvil-metal/anvil/agent/bmcenroll"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// inBandBMC is the machine's BMC as the agent found it in-band, once per
// boot: a description for the inventory and, when the boot asked for it,
// the credential it enrolled (sent on every Register of this boot, so a
// registration retried or repeated carries the same password).
type inBandBMC struct {
	done chan struct{}
	desc *anvilv1.BMC
	cred *anvilv1.BMCCredential
}

// bmcDeviceWait is how long the agent waits for /dev/ipmi0 after the
// modules are loaded (ipmi_si fails to load with ENODEV when it finds no
// system interface, so a machine without a BMC costs no more than this).
const bmcDeviceWait = 3 * time.Second

// bmcBudget bounds the whole discovery and enrollment (every IPMI command
// has its own timeout too): a BMC that hangs delays Register no longer.
const bmcBudget = 30 * time.Second

// findBMC starts looking for the in-band BMC in the background and, if
// enroll, enrolls it.
func findBMC(ctx context.Context, enroll bool, log *slog.Logger) *inBandBMC {
	b := &inBandBMC{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		ctx, cancel := context.WithTimeout(ctx, bmcBudget)
		defer cancel()
		b.desc, b.cred = discoverBMC(ctx, enroll, log)
	}()
	return b
}

// wait returns what findBMC found (nils when no BMC), waiting for it.
func (b *inBandBMC) wait(ctx context.Context) (*anvilv1.BMC, *anvilv1.BMCCredential) {
	if b == nil {
		return nil, nil
	}
	select {
	case <-b.done:
		return b.desc, b.cred
	case <-ctx.Done():
		return nil, nil
	}
}

func discoverBMC(ctx context.Context, enroll bool, log *slog.Logger) (*anvilv1.BMC, *anvilv1.BMCCredential) {
	c, err := bmcenroll.Open(ctx, bmcDeviceWait)
	if err != nil {
		if errors.Is(err, bmcenroll.ErrNoDevice) {
			log.Info("no in-band BMC", "err", err)
		} else {
			log.Warn("in-band BMC unusable", "err", err)
		}
		return nil, nil
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing the device file
	desc, err := bmcenroll.Describe(ctx, c)
	if err != nil {
		log.Warn("in-band BMC: cannot read its LAN configuration", "err", err)
		return &anvilv1.BMC{EnrollError: err.Error()}, nil
	}
	log.Info("in-band BMC", "ip", desc.GetIp(), "mac", desc.GetMac(), "vlan", desc.GetVlan(), "firmware", desc.GetFirmware(), "channel", desc.GetChannel())
	if !enroll {
		return desc, nil
	}
	pw, err := bmcenroll.Password()
	if err != nil {
		desc.EnrollError = err.Error()
		return desc, nil
	}
	id, err := bmcenroll.Enroll(ctx, c, uint8(desc.GetChannel()), pw)
	if err != nil {
		log.Warn("in-band BMC enrollment failed", "err", err)
		desc.EnrollError = err.Error()
		return desc, nil
	}
	log.Info("in-band BMC enrolled", "user", bmcenroll.User, "user_id", id)
	return desc, &anvilv1.BMCCredential{User: bmcenroll.User, Password: pw, UserId: uint32(id)}
}
