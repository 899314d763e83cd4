// Command anvil-agent provisions the machine it runs on: inventory,
// registration, erase, install. In boot mode it is the u-root uinit and reads
// its settings from the kernel command line; in host mode it runs as a
// process and touches only the disks given with --disks.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/agent/app"
	"github.com/anvil-metal/anvil/agent/bootparams"
	"github.com/anvil-metal/anvil/agent/disks"
)

// version is set with -ldflags "-X main.version=...". It has no
// initializer: u-root's busybox build turns package initializers into code
// that runs at start and would overwrite the linker's value.
var version string

func main() {
	var cfg app.Config
	var mode, diskList, logLevel string
	flag.StringVar(&mode, "mode", "host", "host (a process on a host, --disks required) or boot (from RAM on the machine)")
	flag.StringVar(&cfg.Controller, "controller", "", "controller address HOST:PORT; several replicas comma-separated (at most 16), or one DNS name with a record per replica (boot mode: anvil.controller=)")
	flag.StringVar(&cfg.BootToken, "boot-token", "", "boot token (or ANVIL_BOOT_TOKEN; boot mode: anvil.token=)")
	flag.StringVar(&cfg.CAFile, "ca", "", "CA certificate (PEM) to trust the controller")
	flag.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "sha256:HEX fingerprint of the controller's CA")
	flag.StringVar(&diskList, "disks", "", "comma-separated device paths the agent may touch (host mode)")
	flag.StringVar(&cfg.MachineUUID, "machine-uuid", "", "override the SMBIOS UUID (host mode, simulated machines)")
	flag.StringVar(&cfg.ProtectLabel, "protect-label", disks.DefaultProtectLabel, "never erase or write a disk with a GPT partition of this name (empty: off)")
	flag.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	flag.Func("lldp-wait", fmt.Sprintf("most the first inventory waits for the switches' LLDP frames, e.g. 5s; 0 turns LLDP off (default %v; boot mode: anvil.lldp_wait=)", app.DefaultLLDPWait), func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		cfg.LLDPWait = &d
		return nil
	})
	flag.Parse()
	cfg.Mode = app.Mode(mode)
	cfg.Version = version
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.BootToken == "" {
		cfg.BootToken = os.Getenv("ANVIL_BOOT_TOKEN")
	}
	for _, d := range strings.Split(diskList, ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.Disks = append(cfg.Disks, d)
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		fail(fmt.Errorf("--log-level: %w", err))
	}
	if cfg.Mode == app.ModeBoot {
		p, err := bootparams.FromProc()
		if err != nil {
			fail(err)
		}
		cfg = cfg.FromCmdline(p)
		if p.Debug {
			lvl = slog.LevelDebug
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log); err != nil && ctx.Err() == nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "anvil-agent:", err)
	os.Exit(1)
}
