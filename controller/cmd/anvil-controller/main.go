// Command anvil-controller serves the agent and operator APIs from its
// embedded store. Flags only; the controller is assembled by package app.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func main() {
	cfg := app.Defaults()
	var hosts, bootTokens, freeErase, registerErase, logLevel string
	flag.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the database, CA, certificates and tokens")
	flag.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address")
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
	flag.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	debugAddr := flag.String("debug-addr", "", "serve Go's pprof on this address (e.g. 127.0.0.1:6060); off by default")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		fail(fmt.Errorf("--log-level: %w", err))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Hosts = split(hosts)
	cfg.BootTokens = split(bootTokens)
	var err error
	if cfg.Server.FreeEraseMode, err = eraseMode(freeErase); err != nil {
		fail(fmt.Errorf("--free-erase: %w", err))
	}
	if cfg.Server.RegisterEraseMode, err = eraseMode(registerErase); err != nil {
		fail(fmt.Errorf("--register-erase: %w", err))
	}

	if *debugAddr != "" {
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
