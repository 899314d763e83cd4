package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/image"
	"github.com/anvil-metal/anvil/agent/runner"
	"github.com/anvil-metal/anvil/agent/seed"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// ZeroLedger remembers which disks are known to read as zeroes in this
// boot (a verified full erase, or a discard the device guarantees to
// zero), so an install may skip writing zero blocks to them. Anything that
// writes to a disk forgets it first.
type ZeroLedger struct {
	mu     sync.Mutex
	zeroed map[string]bool
}

// MarkZeroed records that path reads as zeroes.
func (l *ZeroLedger) MarkZeroed(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.zeroed == nil {
		l.zeroed = map[string]bool{}
	}
	l.zeroed[canonical(path)] = true
}

// Forget records that path may hold data.
func (l *ZeroLedger) Forget(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.zeroed, canonical(path))
}

// Take reports whether path reads as zeroes and forgets it (the caller is
// about to write).
func (l *ZeroLedger) Take(path string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := canonical(path)
	z := l.zeroed[p]
	delete(l.zeroed, p)
	return z
}

func canonical(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// BootLookup finds the installed kernel on a written disk and describes it
// (for the BOOTING event); the kexec itself belongs to the boot path.
type BootLookup func(target string) (string, error)

// Install writes the instruction's image onto the target disk.
type Install struct {
	Allow *disks.Allowlist
	// Inventory returns the machine's current disks.
	Inventory func(ctx context.Context) (*anvilv1.Inventory, error)
	Zeroed    *ZeroLedger
	// ProtectLabel names the GPT partition that protects a disk from any
	// write (disks.CheckProtected); empty disables the check.
	ProtectLabel string
	Image        image.Options
	// Seed (optional) writes the installed system's first-boot
	// configuration (agent/seed's NoCloud partition) after the image was
	// verified, before the BOOTING event, and summarises it. A failure
	// fails the install and destroys the disk's partition tables, like
	// any failure after the first write.
	Seed func(ctx context.Context, target string, c seed.Config) (string, error)
	// Lookup (optional) finds the installed kernel after the write.
	Lookup BootLookup
	// Firmware (optional) says how the disk boots without the agent and
	// keeps it in the firmware's boot order; what it reports goes into the
	// BOOTING event. It does not fail the install: kexec still boots it.
	Firmware func(ctx context.Context, target string, spec *anvilv1.Install) string
	// Boot (optional) runs after the BOOTING event was acknowledged: kexec
	// or reboot into the installed system; spec carries the extra kernel
	// command line. Nil leaves the agent waiting (host mode: the host is
	// never rebooted).
	Boot func(ctx context.Context, target string, spec *anvilv1.Install) error
}

var _ runner.Executor = (*Install)(nil)

// ErrNoTarget is an install with no disk it may write to.
var ErrNoTarget = errors.New("no target disk for the install")

// Execute implements runner.Executor.
func (x *Install) Execute(ctx context.Context, in *anvilv1.Instruction, p runner.Progress) (runner.Outcome, error) {
	spec := in.GetInstall()
	if spec == nil {
		return runner.Outcome{}, errors.New("install instruction without an install spec")
	}
	inv, err := x.Inventory(ctx)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("inventory for install: %w", err)
	}
	target, err := SelectTarget(x.Allow, inv, spec.GetTargetDisk())
	if err != nil {
		return runner.Outcome{}, err
	}
	if err := disks.CheckProtected(target.GetPath(), x.ProtectLabel); err != nil {
		return runner.Outcome{}, fmt.Errorf("install refused: %w", err)
	}
	zeroed := x.Zeroed != nil && x.Zeroed.Take(target.GetPath())
	o := x.Image
	o.Progress = p.Update
	res, err := image.Install(ctx, image.Request{
		URL: spec.GetUrl(), Checksum: spec.GetChecksum(), Format: spec.GetFormat(),
		Target: target.GetPath(), Zeroed: zeroed, KernelArgs: spec.GetExtraKernelCmdline(),
	}, o)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("install %s on %s: %w", spec.GetImageId(), target.GetPath(), err)
	}
	msg := fmt.Sprintf("installed %s (%s, %s) on %s: %d MiB in %s (%.0f MB/s), %d MiB of zero blocks skipped; %s",
		spec.GetImageId(), res.Format, res.Digest, target.GetPath(), res.Image>>20, res.Duration.Round(1e7),
		float64(res.Image)/max(res.Duration.Seconds(), 1e-3)/1e6, res.Skipped>>20, res.Grow.Reason)
	if res.Tar != "" {
		msg += "; " + res.Tar
	}
	if x.Seed != nil {
		c := seed.Config{
			InstanceID: seed.InstanceID(inv.GetProduct().GetUuid(), in.GetId()),
			Hostname:   spec.GetHostname(), SSHKeys: spec.GetSshPublicKeys(), UserData: []byte(spec.GetUserData()),
			PhoneHomeURL: spec.GetPhoneHomeUrl(), PhoneHomeToken: spec.GetPhoneHomeToken(),
		}
		for _, n := range inv.GetNics() {
			// Ethernet NICs only: an InfiniBand address (20 bytes) is not
			// what network-config matches, and must not fail the install.
			if hw, err := net.ParseMAC(n.GetMac()); err == nil && len(hw) == 6 {
				c.MACs = append(c.MACs, hw.String())
			}
		}
		sum, err := x.Seed(ctx, target.GetPath(), c)
		if err != nil {
			err = fmt.Errorf("install %s on %s: first-boot seed: %w", spec.GetImageId(), target.GetPath(), err)
			if derr := image.Destroy(ctx, target.GetPath()); derr != nil {
				return runner.Outcome{}, errors.Join(err, derr)
			}
			return runner.Outcome{}, fmt.Errorf("%w (partition tables on %s destroyed so the unseeded image cannot boot)", err, target.GetPath())
		}
		msg += "; " + sum
	}
	if x.Lookup != nil {
		// No kernel found is not a failure: the disk may still boot through
		// the firmware, which is the fallback when kexec is impossible.
		if boot, err := x.Lookup(target.GetPath()); err != nil {
			msg += "; kexec lookup: " + err.Error()
		} else {
			msg += "; boot: " + boot
		}
	}
	if x.Firmware != nil {
		msg += "; firmware: " + x.Firmware(ctx, target.GetPath(), spec)
	}
	out := runner.Outcome{Type: anvilv1.EventType_EVENT_TYPE_BOOTING, Message: msg}
	if x.Boot != nil {
		dev := target.GetPath()
		out.Then = func(ctx context.Context) error { return x.Boot(ctx, dev, spec) }
	}
	return out, nil
}

// SelectTarget picks the install's disk: the one named by path (or a
// symlink to it), serial or WWN, or, when none is named, the first allowed
// non-removable disk of the inventory.
func SelectTarget(allow *disks.Allowlist, inv *anvilv1.Inventory, want string) (*anvilv1.Disk, error) {
	if want == "" {
		ds, err := allow.Select(inv, nil)
		if err != nil {
			return nil, err
		}
		if len(ds) == 0 {
			return nil, fmt.Errorf("%w: the inventory has no allowed non-removable disk", ErrNoTarget)
		}
		return ds[0], nil
	}
	wantPath := canonical(want)
	for _, d := range inv.GetDisks() {
		if canonical(d.GetPath()) == wantPath || (d.GetSerial() != "" && d.GetSerial() == want) || (d.GetWwn() != "" && d.GetWwn() == want) {
			if !allow.Allows(d.GetPath()) {
				return nil, fmt.Errorf("%w: disk %s is not on the agent's allowlist", ErrNoTarget, d.GetPath())
			}
			if err := disks.CheckTarget(d); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrNoTarget, err)
			}
			return d, nil
		}
	}
	return nil, fmt.Errorf("%w: no disk %q (by path, serial or WWN) in the inventory", ErrNoTarget, want)
}
