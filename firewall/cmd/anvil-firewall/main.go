// Command anvil-firewall turns a cluster's Kubernetes NetworkPolicies into
// the nftables ruleset of the firewall it runs on (see docs/firewall.md).
// It watches the API server (--kubeconfig, or the in-cluster config) or a
// directory of manifests (--policies-dir), and with --dry-run prints the
// ruleset once instead of applying it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/anvil-metal/anvil/firewall/app"
	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/metrics"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/firewall/watch"
)

var version = "dev"

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

type addrFlag struct{ a *netip.Addr }

func (f addrFlag) String() string {
	if f.a == nil || !f.a.IsValid() {
		return ""
	}
	return f.a.String()
}

func (f addrFlag) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*f.a = a.Unmap()
	return nil
}

type cli struct {
	cfg         config.Config
	kubeconfig  string
	policiesDir string
	metricsAddr string
	dryRun      bool
	logLevel    string
}

func parseFlags(args []string) (cli, error) {
	c := cli{cfg: config.Defaults()}
	var ifaces []string
	fs := flag.NewFlagSet("anvil-firewall", flag.ContinueOnError)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (empty: in-cluster config)")
	fs.StringVar(&c.policiesDir, "policies-dir", "", "read NetworkPolicy/Pod/Namespace/Service manifests from this directory instead of a cluster")
	fs.Var(listFlag{&ifaces}, "cluster-interface", "interface facing the cluster network; repeatable or comma-separated, trailing * matches a prefix (default cluster0)")
	egress := fs.String("default-egress", string(c.cfg.DefaultEgress), "verdict for egress of pods no egress policy selects: allow or deny")
	ingress := fs.String("default-ingress", string(c.cfg.DefaultIngress), "verdict for ingress to pods no ingress policy selects: allow or deny")
	fs.BoolVar(&c.cfg.Masquerade, "masquerade", false, "masquerade egress traffic behind the outgoing interface's address")
	fs.Var(addrFlag{&c.cfg.SNATv4}, "snat-v4", "SNAT egress IPv4 traffic to this address (overrides --masquerade for IPv4)")
	fs.Var(addrFlag{&c.cfg.SNATv6}, "snat-v6", "SNAT egress IPv6 traffic to this address (overrides --masquerade for IPv6)")
	fs.BoolVar(&c.cfg.LoadBalancerIngress, "loadbalancer-ingress", false, "accept ingress to Services of type LoadBalancer on their ports")
	fs.BoolVar(&c.cfg.LogDrops, "log-drops", false, "log dropped packets through the kernel log (rate limited)")
	fs.StringVar(&c.cfg.Table, "table", c.cfg.Table, "nftables table (family inet) owned by anvil-firewall")
	fs.DurationVar(&c.cfg.Debounce, "debounce", c.cfg.Debounce, "wait this long for more changes before reconciling")
	fs.DurationVar(&c.cfg.Resync, "resync", c.cfg.Resync, "reconcile at least this often")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:9105", "serve Prometheus metrics on this address (empty: off)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "print the ruleset (nft syntax) of the current state once and exit")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *showVersion {
		fmt.Println(version)
		os.Exit(0)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if len(ifaces) > 0 {
		c.cfg.ClusterInterfaces = ifaces
	}
	c.cfg.DefaultEgress, c.cfg.DefaultIngress = config.Verdict(*egress), config.Verdict(*ingress)
	if c.kubeconfig != "" && c.policiesDir != "" {
		return c, errors.New("--kubeconfig and --policies-dir exclude each other")
	}
	return c, c.cfg.Validate()
}

func main() {
	app.TuneGC()
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "anvil-firewall:", err)
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "anvil-firewall:", err)
		os.Exit(1)
	}
}

func run(c cli) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	wopts := watch.Options{Debounce: c.cfg.Debounce, Resync: c.cfg.Resync, Logger: log}
	var src watch.Source
	if c.policiesDir != "" {
		src = watch.NewDir(c.policiesDir, wopts)
	} else {
		rc, err := watch.RESTConfig(c.kubeconfig)
		if err != nil {
			return err
		}
		rc.UserAgent = "anvil-firewall/" + version
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		src = watch.NewKube(client, wopts)
	}
	if c.dryRun {
		return dryRun(ctx, src, c.cfg, os.Stdout, os.Stderr)
	}

	a, err := apply.New(apply.WithLogger(log))
	if err != nil {
		return err
	}
	defer a.Close()
	m := metrics.New()
	if c.metricsAddr != "" {
		srv := &http.Server{Addr: c.metricsAddr, Handler: promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", c.metricsAddr, "err", err)
			}
		}()
		defer srv.Close()
	}
	log.Info("anvil-firewall starting", "version", version, "table", c.cfg.Table, "cluster_interfaces", c.cfg.ClusterInterfaces,
		"default_egress", c.cfg.DefaultEgress, "default_ingress", c.cfg.DefaultIngress)
	return app.Run(ctx, app.Options{Config: c.cfg, Source: src, Applier: a, Metrics: m, Logger: log, DropLogInterval: 10 * time.Second})
}

// dryRun prints the ruleset of the first complete snapshot and exits.
func dryRun(ctx context.Context, src watch.Source, cfg config.Config, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out string
	var errs []error
	done := false
	err := src.Run(ctx, func(u watch.Update) {
		if done {
			return
		}
		rs, invalid := compile.Compile(u.Snapshot, cfg)
		out, errs, done = model.Render(rs), append(u.Errors, invalid...), true
		cancel()
	})
	if !done {
		if err == nil {
			err = errors.New("source ended before the first snapshot")
		}
		return err
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, "error:", e)
	}
	_, err = io.WriteString(stdout, out)
	return err
}
