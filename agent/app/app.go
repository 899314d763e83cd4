// Package app assembles anvil-agent: settings from flags or the kernel
// command line, the inventory source (with the LLDP neighbours of the
// NICs, package lldp), the disk allowlist, the executors and the runner.
// cmd/anvil-agent only parses flags into Config.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/bootparams"
	"github.com/anvil-metal/anvil/agent/ctrladdr"
	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/efiboot"
	"github.com/anvil-metal/anvil/agent/executor"
	"github.com/anvil-metal/anvil/agent/image"
	"github.com/anvil-metal/anvil/agent/image/fetch"
	"github.com/anvil-metal/anvil/agent/image/growpart"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	"github.com/anvil-metal/anvil/agent/inventory"
	"github.com/anvil-metal/anvil/agent/kexec"
	"github.com/anvil-metal/anvil/agent/runner"
	"github.com/anvil-metal/anvil/agent/seed"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Mode says where the agent runs.
type Mode string

const (
	// ModeHost runs as a process on a host that must stay untouched except
	// for the allowlisted disks.
	ModeHost Mode = "host"
	// ModeBoot runs from RAM on the machine it provisions (u-root uinit).
	ModeBoot Mode = "boot"
)

// Config holds the agent's settings. In boot mode, empty fields are taken
// from the kernel command line (package bootparams).
type Config struct {
	Mode Mode
	// Controller is the controller's address, or the replicas' addresses
	// comma-separated, or one DNS name with a record per replica (package
	// ctrladdr; anvil.controller= in boot mode).
	Controller    string
	BootToken     string
	CAFile        string
	CAFingerprint string
	// Disks is the allowlist; required in host mode.
	Disks []string
	// MachineUUID overrides the SMBIOS UUID (host mode only, to run several
	// simulated machines on one host).
	MachineUUID string
	// ProtectLabel is the GPT partition name that keeps a disk from being
	// erased or written (empty: no protection by marker).
	ProtectLabel string
	// DebugShell starts the initramfs's shell on the console (boot mode,
	// anvil.debug=1 on the kernel command line).
	DebugShell bool
	// Console is the machine's console= arguments (boot mode: from the
	// kernel command line): an installed system logs there too.
	Console string
	// LLDPWait is the most the first inventory waits for the switches'
	// LLDP frames (0: LLDP off; nil: anvil.lldp_wait= in boot mode, else
	// DefaultLLDPWait).
	LLDPWait *time.Duration
	Version  string
}

// lldpWait is the effective LLDP wait.
func (c Config) lldpWait() time.Duration {
	if c.LLDPWait == nil {
		return DefaultLLDPWait
	}
	return *c.LLDPWait
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeHost:
		if len(c.Disks) == 0 {
			errs = append(errs, errors.New("host mode needs --disks: the agent touches only allowlisted disks"))
		}
	case ModeBoot:
		if c.MachineUUID != "" {
			errs = append(errs, errors.New("--machine-uuid is for host mode only; a machine is identified by its SMBIOS UUID"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q: want host or boot", c.Mode))
	}
	if c.DebugShell && c.Mode != ModeBoot {
		errs = append(errs, errors.New("the debug shell is for boot mode only"))
	}
	if c.LLDPWait != nil && *c.LLDPWait < 0 {
		errs = append(errs, fmt.Errorf("LLDP wait %v is negative (0 turns LLDP off)", *c.LLDPWait))
	}
	if c.MachineUUID != "" && !anvilv1.ValidUUID(c.MachineUUID) {
		errs = append(errs, fmt.Errorf("machine UUID %q is not a lower-case canonical UUID", c.MachineUUID))
	}
	if _, err := ctrladdr.Parse(c.Controller); err != nil {
		errs = append(errs, fmt.Errorf("controller address (--controller or anvil.controller=): %w", err))
	}
	if c.BootToken == "" {
		errs = append(errs, errors.New("boot token is required (--boot-token or anvil.token=)"))
	}
	if c.CAFile == "" && c.CAFingerprint == "" {
		errs = append(errs, errors.New("a CA file or CA fingerprint is required to trust the controller"))
	}
	return errors.Join(errs...)
}

// FromCmdline fills empty fields from the kernel command line.
func (c Config) FromCmdline(p bootparams.Params) Config {
	if c.Controller == "" {
		c.Controller = p.Controller
	}
	if c.BootToken == "" {
		c.BootToken = p.BootToken
	}
	if c.CAFingerprint == "" {
		c.CAFingerprint = p.CAFingerprint
	}
	c.DebugShell = c.DebugShell || p.Debug
	if c.Console == "" {
		c.Console = strings.Join(p.Console, " ")
	}
	if c.LLDPWait == nil {
		c.LLDPWait = p.LLDPWait
	}
	return c
}

// Run runs the agent until ctx ends or it is powered off (host mode).
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var caPEM []byte
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		caPEM = b
	}
	addrs, err := ctrladdr.Parse(cfg.Controller)
	if err != nil {
		return err
	}
	// Pinning by fingerprint checks the leaf against the dialled host
	// itself (crypto/tls sends no SNI for IP addresses): each replica's
	// against its own.
	tlsFor := func(host string) (*tls.Config, error) {
		return pki.ClientTLS(caPEM, cfg.CAFingerprint, pki.WithServerName(host))
	}
	if _, err := tlsFor(addrs.Host(0)); err != nil { // a bad CA or fingerprint fails now
		return err
	}
	// LLDP listening starts as early as the links exist and runs beside
	// the rest of the start-up: in boot mode when the NIC drivers made
	// them (before DHCP brings them up), in host mode now.
	nb := newNeighbors(cfg.lldpWait(), log)
	if cfg.Mode == ModeBoot {
		if err := prepareBoot(ctx, cfg, caPEM, addrs, log, bootenv.WithLinksFound(func(links []string) { nb.listen(ctx, links) })); err != nil {
			return err
		}
	} else if nb != nil {
		if links, err := bootenv.PhysicalLinks(); err != nil {
			log.Warn("no LLDP: listing the network links failed", "err", err)
		} else {
			nb.listen(ctx, links)
		}
	}
	// The in-band BMC is looked for while the rest starts (boot mode: the
	// machine's own BMC; a host's is left alone).
	var bmcFound *inBandBMC
	if cfg.Mode == ModeBoot {
		bmcFound = findBMC(ctx, log)
	}
	var allow *disks.Allowlist
	if cfg.Mode == ModeHost {
		if allow, err = disks.NewAllowlist(cfg.Disks); err != nil {
			return err
		}
	}
	inv := func(ctx context.Context) (*anvilv1.Inventory, error) {
		// With an overriding UUID the host's own SMBIOS UUID may be absent.
		i, err := inventory.Collect(ctx, inventory.WithLogger(log), inventory.WithRequireUUID(cfg.MachineUUID == ""))
		if err != nil {
			return nil, err
		}
		allow.Filter(i)
		nb.fill(ctx, i)
		if cfg.MachineUUID != "" {
			if i.Product == nil {
				i.Product = &anvilv1.Product{}
			}
			i.Product.Uuid = strings.ToLower(cfg.MachineUUID)
		}
		i.Bmc = bmcFound.wait(ctx)
		return i, nil
	}
	zeroed := &executor.ZeroLedger{}
	// Without GRUB's images (or with broken ones) tarball installs boot
	// only by kexec, which the install event says; raw images are not
	// concerned.
	var tarGrub *bootloader.Files
	if grub, err := bootloader.LoadFiles(bootloader.Dir); err != nil {
		log.Warn("no usable GRUB images: root filesystem tarballs will boot only by the agent's kexec", "dir", bootloader.Dir, "err", err)
	} else {
		tarGrub = &grub
	}
	r, err := runner.New(runner.Config{
		Controller:   addrs.String(),
		TLSFor:       tlsFor,
		BootToken:    cfg.BootToken,
		AgentVersion: cfg.Version,
		Inventory:    inv,
		EnrollBMC: func(ctx context.Context, c *anvilv1.BMCCredential) (string, error) {
			if bmcFound == nil {
				return "", errors.New("an agent in host mode leaves the host's BMC alone")
			}
			return bmcFound.enroll(ctx, c, log)
		},
		Executors: runner.Executors{
			Wipe: &executor.Wipe{Allow: allow, Inventory: inv, Methods: executor.DefaultMethods(), Zeroed: zeroed, ProtectLabel: cfg.ProtectLabel},
			Install: &executor.Install{Allow: allow, Inventory: inv, Zeroed: zeroed, ProtectLabel: cfg.ProtectLabel,
				// Raw images grow to leave the seed's room at the disk's
				// end; rootfs layouts leave it by default.
				Image: image.Options{Source: fetch.Source(fetch.Options{Logger: log}),
					Tar:  rootfs.Installer(rootfs.Options{Bootloader: tarGrub, KernelArgs: cfg.Console}),
					Grow: growpart.Options{Reserve: seed.Reserve, Drop: []string{seed.PartName}}},
				Seed: seed.Writer(),
				Lookup: func(target string) (string, error) {
					b, err := bootconfig.Lookup(target)
					return b.Describe(), err
				},
				Firmware: firmwareBoot(cfg.Mode),
				Boot:     bootInstalled(cfg.Mode, executor.Reboot, kexec.WithLogger(log), kexec.WithConsole(cfg.Console))},
			Reboot:   &executor.Power{HostMode: cfg.Mode == ModeHost},
			PowerOff: &executor.Power{HostMode: cfg.Mode == ModeHost, Off: true},
		},
	}, runner.WithLogger(log))
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}

// firmwareBoot says how an installed disk boots without the agent
// (bootloader.Inspect) and, in boot mode on a UEFI machine, keeps its
// loader in the firmware's boot order right after the network
// (efiboot.Ensure). An image the machine's firmware cannot boot is said to
// start only by kexec. Host mode inspects only: a host's NVRAM is never
// touched.
func firmwareBoot(m Mode, opts ...efiboot.Option) func(ctx context.Context, target string, spec *anvilv1.Install) string {
	return func(ctx context.Context, target string, spec *anvilv1.Install) string {
		r, err := bootloader.Inspect(target)
		if err != nil {
			return "firmware boot not checked: " + err.Error()
		}
		msg := r.String()
		if m != ModeBoot {
			return msg
		}
		if _, err := os.Stat(efiboot.FirmwareDir); err != nil {
			if !r.BIOS {
				msg += "; this machine boots by BIOS and the disk has no BIOS boot code: it starts only by the agent's kexec"
			}
			return msg
		}
		if r.UEFI == "" {
			return msg + "; this machine boots by UEFI and the disk has no UEFI loader: it starts only by the agent's kexec"
		}
		desc := fmt.Sprintf("%s%s on %s", efiboot.DescriptionPrefix, spec.GetImageId(), filepath.Base(target))
		rep, err := efiboot.Ensure(ctx, target, r.ESP, r.Loader, desc, opts...)
		if err != nil {
			return fmt.Sprintf("%s; UEFI boot entry not kept: %v (%s)", msg, err, rep)
		}
		return msg + "; " + rep
	}
}

// bootInstalled is what follows a verified install: in boot mode a kexec
// into the installed system, with the install's extra kernel command line,
// falling back to reboot (a firmware reboot into the installed disk; the
// boot service's loop guard sends a provisioned machine to local boot); in
// host mode nothing: the host is never kexec'd or rebooted.
func bootInstalled(m Mode, reboot func(context.Context) error, opts ...kexec.Option) func(context.Context, string, *anvilv1.Install) error {
	if m != ModeBoot {
		return nil
	}
	return func(ctx context.Context, target string, spec *anvilv1.Install) error {
		return kexec.BootOrReboot(ctx, target, spec.GetExtraKernelCmdline(), reboot, opts...)
	}
}
