package labkit

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// WaitState waits until every machine id is in state want, failing early
// when one is Failed (with its reason).
func WaitState(ctx context.Context, op *Operator, ids []string, want anvilv1.MachineState, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var pending []string
		for _, id := range ids {
			m, err := op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
			if err != nil {
				pending = append(pending, fmt.Sprintf("%s: %v", id, err))
				continue
			}
			if s := m.GetState(); s != want {
				if s == anvilv1.MachineState_MACHINE_STATE_FAILED && want != s {
					return fmt.Errorf("machine %s failed: %s", id, m.GetFailureReason())
				}
				pending = append(pending, fmt.Sprintf("%s: %s", id, stateName(s)))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %s (%w)", stateName(want), strings.Join(pending, "; "), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func stateName(s anvilv1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}

// Phases are the times of one machine's way from power-on to Provisioned.
type Phases struct {
	Machine string
	// Firmware is "uefi" or "bios".
	Firmware string
	// From power-on, from the controller's log (Timeline): first DHCP
	// request, the chain script fetched (the firmware's and iPXE's share
	// ends there), the agent's kernel and initramfs fetched (the kernel
	// starts).
	DHCP, Chain, KernelStart time.Duration
	// From power-on: the boot script request (from the controller's log),
	// registration and Ready (from the events).
	PXE, Registered, Ready time.Duration
	// From the allocation: install started, image written and booting,
	// installed OS phoned home.
	Installing, Booting, PhonedHome time.Duration
	// Total is power-on to Provisioned.
	Total time.Duration
}

// PhasesOf reads a machine's phases from its events and its boot's
// timeline; poweredOn is when its VM started. Phases not reached are zero.
func PhasesOf(machine string, evs []*anvilv1.Event, poweredOn time.Time, tl Timeline) Phases {
	p := Phases{Machine: machine}
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return 0
		}
		return t.Sub(poweredOn)
	}
	p.DHCP, p.Chain, p.KernelStart = since(tl.DHCP), since(tl.Chain), since(tl.Initramfs)
	// Network boots are observations, not events: the script's time
	// comes from the controller's log.
	p.PXE = since(tl.Script)
	var allocated time.Time
	first := func(d *time.Duration, from time.Time, at time.Time) {
		if *d == 0 && !from.IsZero() {
			*d = at.Sub(from)
		}
	}
	for _, e := range evs {
		at := e.GetTime().AsTime()
		switch e.GetType() {
		case anvilv1.EventType_EVENT_TYPE_REGISTERING:
			first(&p.Registered, poweredOn, at)
		case anvilv1.EventType_EVENT_TYPE_WAITING, anvilv1.EventType_EVENT_TYPE_WIPED:
			if allocated.IsZero() {
				p.Ready = at.Sub(poweredOn) // the last one before the allocation
			}
		case anvilv1.EventType_EVENT_TYPE_ALLOCATED:
			if allocated.IsZero() {
				allocated = at
			}
		case anvilv1.EventType_EVENT_TYPE_INSTALLING:
			first(&p.Installing, allocated, at)
		case anvilv1.EventType_EVENT_TYPE_BOOTING:
			first(&p.Booting, allocated, at)
		case anvilv1.EventType_EVENT_TYPE_PHONED_HOME:
			first(&p.PhonedHome, allocated, at)
			if p.Total == 0 {
				p.Total = at.Sub(poweredOn)
			}
		}
	}
	return p
}

// KernelToProvisioned is the time from the agent's kernel start to
// Provisioned.
func (p Phases) KernelToProvisioned() time.Duration {
	if p.Total == 0 || p.KernelStart == 0 {
		return 0
	}
	return p.Total - p.KernelStart
}

// PrintPhases writes the phase table: from power-on the first DHCP
// request, the chain script (the firmware's and iPXE's share ends there),
// the agent's kernel start, its registration and Ready; from the
// allocation the install, the kexec and the phone home; power-on and
// kernel start to Provisioned.
func PrintPhases(w io.Writer, ps []Phases) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tFIRMWARE\tDHCP\tCHAIN\tKERNEL\tREGISTERED\tREADY\t| INSTALLING\tBOOTING\tPHONED HOME\t| POWER-ON→PROVISIONED\tKERNEL→PROVISIONED")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t| %s\t%s\t%s\t| %s\t%s\n", p.Machine, p.Firmware, dur(p.DHCP), dur(p.Chain), dur(p.KernelStart),
			dur(p.Registered), dur(p.Ready), dur(p.Installing), dur(p.Booting), dur(p.PhonedHome), dur(p.Total), dur(p.KernelToProvisioned()))
	}
	return tw.Flush()
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return d.Round(100 * time.Millisecond).String()
}
