// Command anvil-controller serves the agent and operator APIs from its
// embedded store. Flags only; the controller is assembled by package app.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/boot"
	"github.com/anvil-metal/anvil/controller/boot/dhcp"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func main() {
	cfg := app.Defaults()
	var hosts, bootTokens, freeErase, registerErase, logLevel string
	flag.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the database, CA, certificates and tokens")
	flag.StringVar(&cfg.Store, "store", cfg.Store, "PostgreSQL URL (postgres://user:password@host/db?sslmode=...) to keep the state in; empty: SQLite in the data directory")
	flag.DurationVar(&cfg.StoreWait, "store-wait", cfg.StoreWait, "how long to keep trying a PostgreSQL store that refuses connections at start (0: once)")
	flag.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address")
	flag.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "plain-HTTP address for Prometheus metrics (/metrics) and health (/healthz, /readyz: the store answers); empty: off")
	flag.StringVar(&hosts, "hosts", "", "comma-separated extra DNS names/IPs for the serving certificate")
	flag.StringVar(&cfg.TLSCert, "tls-cert", "", "serving certificate (default: generated from the data dir's CA)")
	flag.StringVar(&cfg.TLSKey, "tls-key", "", "serving key")
	flag.StringVar(&bootTokens, "boot-tokens", "", "comma-separated extra boot tokens accepted at Register")
	flag.DurationVar(&cfg.Server.HeartbeatInterval, "heartbeat-interval", cfg.Server.HeartbeatInterval, "heartbeat interval told to agents")
	flag.DurationVar(&cfg.Server.KeepaliveInterval, "keepalive-interval", cfg.Server.KeepaliveInterval, "keepalive interval on idle Wait streams")
	flag.IntVar(&cfg.Server.EventHistory, "event-history", cfg.Server.EventHistory, "events kept per machine")
	flag.StringVar(&freeErase, "free-erase", "quick", "erase mode when a machine is freed: none|quick|secure|full")
	flag.StringVar(&registerErase, "register-erase", "none", "erase mode queued when an unallocated machine registers")
	flag.BoolVar(&cfg.Server.EraseFallback, "erase-fallback", false, "secure erase: accept a verified full overwrite on disks without a usable hardware erase")
	var enroll, bmcEnroll string
	flag.StringVar(&bmcEnroll, "bmc-enroll", string(cfg.Server.BMCEnroll), "in-band BMC enrollment: in-band (agents create an anvil user on their machine's BMC through /dev/ipmi0 and report it; an address set with anvilctl machine bmc wins), or off (operators manage BMC users and addresses)")
	flag.StringVar(&enroll, "enroll", string(cfg.Server.EnrollPolicy), "enrollment of unknown machines and of unexpected boots: auto, or approve (an operator approves each with anvilctl machine approve)")
	flag.DurationVar(&cfg.Server.BootTokenTTL, "boot-token-ttl", cfg.Server.BootTokenTTL, "how long a network boot's token is good for its one registration")
	flag.BoolVar(&cfg.Server.BindBootTokenAddress, "boot-token-bind-address", cfg.Server.BindBootTokenAddress, "refuse a boot token from another client address than its script went to (switch off when agents reach the controller through NAT or another interface)")
	flag.DurationVar(&cfg.Server.PhoneHomeTTL, "phone-home-ttl", cfg.Server.PhoneHomeTTL, "how long an install's phone-home token is good")
	flag.Float64Var(&cfg.Server.RegisterRate, "register-rate", cfg.Server.RegisterRate, "Register calls per second per client address (0: no limit)")
	flag.IntVar(&cfg.Server.RegisterBurst, "register-burst", cfg.Server.RegisterBurst, "Register burst per client address")
	flag.DurationVar(&cfg.Server.BMCCheckInterval, "bmc-check-interval", cfg.Server.BMCCheckInterval, "how often silent machines' BMCs are asked for the power state and the recovery sweep runs (0: never)")
	flag.DurationVar(&cfg.Server.BMCBackoffMax, "bmc-backoff-max", cfg.Server.BMCBackoffMax, "longest wait before a failing BMC is asked again by the periodic checks")
	flag.DurationVar(&cfg.Server.BootDeadline, "boot-deadline", cfg.Server.BootDeadline, "how long a machine reset into PXE by the controller (or crash-looping) has before it is power-cycled again; doubles with each power cycle (0: no recovery power cycles)")
	flag.IntVar(&cfg.Server.BootPowerCycles, "boot-power-cycles", cfg.Server.BootPowerCycles, "recovery power cycles at most per machine before it is left alone")
	flag.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	debugAddr := flag.String("debug-addr", "", "serve Go's pprof on this address (e.g. 127.0.0.1:6060), and POST /debug/free-os-memory (a collection that returns freed memory to the OS, for memory measurements); off by default")
	bc := boot.Defaults()
	flag.StringVar(&bc.Listen, "boot-listen", "", "HTTP boot service address (iPXE scripts, agent files, images, phone home), e.g. :8080; off when empty")
	flag.StringVar(&bc.BaseURL, "boot-url", "", "URL machines reach the boot service at, e.g. http://192.168.77.1:8080")
	flag.StringVar(&bc.AgentController, "agent-controller", "", "gRPC address agents dial (default: the --listen address): HOST:PORT, the replicas' HOST:PORT comma-separated (at most 16), or one DNS name with a record per replica; each serving certificate must name the host agents dial (--hosts)")
	flag.StringVar(&bc.Kernel, "boot-kernel", "", "the agent's kernel (vmlinuz)")
	flag.StringVar(&bc.Initramfs, "boot-initramfs", "", "the agent's initramfs (make initramfs)")
	flag.StringVar(&bc.KernelArgs, "boot-kernel-args", bc.KernelArgs, "extra kernel arguments for the agent")
	flag.StringVar(&bc.ImageDir, "image-dir", "", "directory served under /images/ by the boot service")
	dc := dhcp.Defaults()
	var dhcpMode, dhcpIface, dhcpServer, dhcpPool, dhcpMask, dhcpRouter, dhcpDNS, ipxeDir string
	flag.StringVar(&dhcpMode, "dhcp", "off", "DHCP: off, proxy (another server leases addresses) or full (this one does)")
	flag.StringVar(&dhcpIface, "dhcp-interface", "", "interface of the provisioning network")
	flag.StringVar(&dhcpServer, "dhcp-server-ip", "", "this controller's IPv4 address on that network")
	flag.StringVar(&dhcpPool, "dhcp-pool", "", "full mode: address range FIRST-LAST")
	flag.StringVar(&dhcpMask, "dhcp-netmask", "255.255.255.0", "full mode: netmask")
	flag.StringVar(&dhcpRouter, "dhcp-router", "", "full mode: default gateway (optional)")
	flag.StringVar(&dhcpDNS, "dhcp-dns", "", "full mode: comma-separated DNS servers (optional)")
	flag.DurationVar(&dc.LeaseTime, "dhcp-lease", dc.LeaseTime, "full mode: lease time")
	flag.BoolVar(&cfg.RouterAdvertisements, "dhcp-ipv6-ra", true, "full mode: answer IPv6 router solicitations with an advertisement that offers nothing (iPXE otherwise waits ~16 s for IPv6 at every boot)")
	tftpListen := flag.String("tftp-listen", "", "TFTP address for legacy PXE clients (e.g. :69); serves iPXE from --ipxe-dir")
	flag.StringVar(&ipxeDir, "ipxe-dir", "/usr/lib/ipxe", "directory with Debian's iPXE binaries (undionly.kpxe, snponly.efi, ipxe.efi), served over TFTP and, for UEFI HTTP Boot, by the boot service")
	flag.Parse()
	if bc.Listen != "" {
		// iPXE's EFI image by HTTP, for UEFI HTTP Boot clients.
		bc.Files = map[string]string{dc.EFIFile: filepath.Join(ipxeDir, dc.EFIFile)}
		cfg.Boot = &bc
	}
	if dhcpMode != "off" {
		var err error
		if cfg.DHCP, err = dhcpConfig(dc, dhcpMode, dhcpServer, dhcpPool, dhcpMask, dhcpRouter, dhcpDNS); err != nil {
			fail(err)
		}
		cfg.DHCPInterface = dhcpIface
	}
	if *tftpListen != "" {
		cfg.TFTPListen = *tftpListen
		cfg.TFTPFiles = map[string]string{}
		for _, f := range []string{dc.BIOSFile, dc.EFIFile, "ipxe.efi"} {
			cfg.TFTPFiles[f] = filepath.Join(ipxeDir, f)
		}
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		fail(fmt.Errorf("--log-level: %w", err))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Hosts = split(hosts)
	cfg.BootTokens = split(bootTokens)
	var err error
	if cfg.Server.BMCEnroll, err = trust.ParseBMCPolicy(bmcEnroll); err != nil {
		fail(fmt.Errorf("--bmc-enroll: %w", err))
	}
	if cfg.Server.EnrollPolicy, err = trust.ParsePolicy(enroll); err != nil {
		fail(fmt.Errorf("--enroll: %w", err))
	}
	if cfg.Server.FreeEraseMode, err = eraseMode(freeErase); err != nil {
		fail(fmt.Errorf("--free-erase: %w", err))
	}
	if cfg.Server.RegisterEraseMode, err = eraseMode(registerErase); err != nil {
		fail(fmt.Errorf("--register-erase: %w", err))
	}

	if *debugAddr != "" {
		// Benchmarks read RSS after this (test/bench/agentload).
		http.HandleFunc("POST /debug/free-os-memory", func(w http.ResponseWriter, _ *http.Request) {
			debug.FreeOSMemory()
			fmt.Fprintln(w, "ok")
		})
		go func() {
			// net/http/pprof registers on http.DefaultServeMux.
			if err := http.ListenAndServe(*debugAddr, nil); err != nil {
				log.Error("debug server", "err", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := app.Start(ctx, cfg, log)
	if err != nil {
		fail(err)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		if err := c.Shutdown(10 * time.Second); err != nil {
			fail(err)
		}
	case err := <-c.Done():
		if err != nil {
			fail(err)
		}
	}
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func eraseMode(s string) (anvilv1.EraseMode, error) {
	v, ok := anvilv1.EraseMode_value["ERASE_MODE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown erase mode %q (none|quick|secure|full)", s)
	}
	return anvilv1.EraseMode(v), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "anvil-controller:", err)
	os.Exit(1)
}

// dhcpConfig parses the DHCP flags.
func dhcpConfig(c dhcp.Config, mode, server, pool, mask, router, dns string) (*dhcp.Config, error) {
	var errs []error
	parse := func(what, v string) netip.Addr {
		if v == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", what, err))
		}
		return a
	}
	c.Mode = dhcp.Mode(mode)
	c.ServerIP = parse("dhcp-server-ip", server)
	if c.Mode == dhcp.Full {
		first, last, ok := strings.Cut(pool, "-")
		if !ok {
			errs = append(errs, fmt.Errorf("--dhcp-pool %q: want FIRST-LAST", pool))
		}
		c.PoolStart, c.PoolEnd = parse("dhcp-pool", first), parse("dhcp-pool", last)
		c.Netmask = parse("dhcp-netmask", mask)
		c.Router = parse("dhcp-router", router)
		for _, d := range split(dns) {
			c.DNS = append(c.DNS, parse("dhcp-dns", d))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}
