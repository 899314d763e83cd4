// Package app assembles anvil-controller from its parts: the data directory
// (SQLite store, CA, serving certificate, tokens), the gRPC server with its
// interceptors and its listener, and the optional HTTP boot service. The command in cmd/anvil-controller only
// parses flags into Config; tests start, kill and restart controllers
// in-process through Start.
package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/anvil-metal/anvil/controller/boot"
	"github.com/anvil-metal/anvil/controller/boot/dhcp"
	"github.com/anvil-metal/anvil/controller/boot/ra"
	"github.com/anvil-metal/anvil/controller/boot/tftp"
	"github.com/anvil-metal/anvil/controller/ops"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/server"
	"github.com/anvil-metal/anvil/controller/store/sqlstore"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Config is everything the controller needs to start.
type Config struct {
	// DataDir holds anvil.db, the CA, the serving certificate and tokens.
	DataDir string
	// Store is where the state lives: "" for the embedded SQLite file
	// (anvil.db in DataDir), or a PostgreSQL URL (postgres://user@host/db
	// or postgresql://...; sqlstore.OpenPostgres).
	Store string
	// StoreWait is how long Start keeps trying a PostgreSQL store that does
	// not accept connections (a database starting with the controller)
	// before it gives up; 0 tries once.
	StoreWait time.Duration
	// Listen is the gRPC address, e.g. "127.0.0.1:7443" or ":7443".
	Listen string
	// MetricsListen, when set, serves Prometheus metrics (/metrics) and
	// health (/healthz, /readyz) over plain HTTP there (package ops).
	MetricsListen string
	// Hosts are extra DNS names/IPs for the generated serving certificate.
	Hosts []string
	// TLSCert and TLSKey, when both set, are used instead of generating a
	// certificate from the data dir's CA.
	TLSCert, TLSKey string
	// BootTokens are accepted at Register besides the data dir's boot.token.
	BootTokens []string
	Server     server.Config
	// Boot, when set, runs the HTTP boot service (iPXE scripts, boot files,
	// images, phone home). Empty AgentController and CAFingerprint are
	// filled from the gRPC listener and the CA.
	Boot *boot.Config
	// DHCP, when set (it needs Boot), answers DHCP on DHCPInterface; an
	// empty ChainURL is the boot service's chain script.
	DHCP          *dhcp.Config
	DHCPInterface string
	// RouterAdvertisements answers IPv6 router solicitations on the DHCP
	// interface with an advertisement that offers nothing (package ra),
	// so iPXE does not wait for IPv6; full mode only.
	RouterAdvertisements bool
	// TFTPFiles, when set, are served by name over TFTP on TFTPListen
	// (iPXE for legacy PXE ROMs).
	TFTPFiles  map[string]string
	TFTPListen string
}

// Defaults returns a config for a data dir.
func Defaults() Config {
	return Config{DataDir: "/var/lib/anvil", Listen: ":7443", StoreWait: time.Minute, Server: server.DefaultConfig()}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is required"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("give both a TLS certificate and key, or neither"))
	}
	if c.Boot != nil && c.Boot.Listen == "" {
		errs = append(errs, errors.New("boot service: listen address is required"))
	}
	if c.DHCP != nil && (c.Boot == nil || c.DHCPInterface == "") {
		errs = append(errs, errors.New("DHCP needs the boot service and an interface"))
	}
	if len(c.TFTPFiles) > 0 && c.TFTPListen == "" {
		errs = append(errs, errors.New("TFTP needs a listen address"))
	}
	return errors.Join(append(errs, c.Server.Validate())...)
}

// Paths of the files in the data dir.
const (
	DBFile         = "anvil.db"
	AdminTokenFile = "admin.token"
	BootTokenFile  = "boot.token"
	CAFile         = "ca.crt"
	// The signing keys, one per purpose (random, never handed out).
	BootTokenKeyFile = "keys/boot-token.key"
	PhoneHomeKeyFile = "keys/phone-home.key"
	BMCKeyFile       = "keys/bmc.key"
	// FeedKeyFile authenticates the change announcements between
	// replicas on one PostgreSQL database.
	FeedKeyFile = "keys/feed.key"
)

// Controller is a running controller.
type Controller struct {
	// Addr is the bound listen address.
	Addr net.Addr
	// CAFile and CAFingerprint identify the CA agents and anvilctl trust.
	CAFile, CAFingerprint string
	AdminToken, BootToken string
	// BootAddr is the boot service's bound address (nil when off).
	BootAddr net.Addr

	store *sqlstore.Store
	srv   *server.Server
	grpc  *grpc.Server
	http  *http.Server
	done  chan error
	// stopUDP ends the DHCP and TFTP servers; udp waits for them.
	stopUDP context.CancelFunc
	udp     sync.WaitGroup
	udpErr  []error
	udpMu   sync.Mutex
	// stopChecks ends the periodic work (BMC checks, recovery, health
	// checks) running under checksCtx.
	checksCtx  context.Context
	stopChecks context.CancelFunc
	checks     sync.WaitGroup
	// ops: metrics and health; opsHTTP serves them (nil when off).
	ops     *ops.Ops
	opsHTTP *http.Server
	// MetricsAddr is the metrics listener's bound address (nil when off).
	MetricsAddr net.Addr
	// flushSeen writes the last-seen times kept in memory (at Stop).
	flushSeen func() error
	log       *slog.Logger
	// fault is why the controller stopped serving on its own (the store
	// says it must not go on: the schema moved past this binary).
	fault atomic.Pointer[error]
}

var _ boot.Machines = (*server.Server)(nil)

// Start opens (or initializes) the data dir and serves until Stop.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ca, err := pki.EnsureCA(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", cfg.DataDir, err)
	}
	certFile, keyFile := cfg.TLSCert, cfg.TLSKey
	if certFile == "" {
		hosts := append([]string{}, cfg.Hosts...)
		if h, _, err := net.SplitHostPort(cfg.Listen); err == nil && h != "" {
			hosts = append(hosts, h)
		}
		if certFile, keyFile, err = ca.EnsureServingCert(cfg.DataDir, hosts); err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
	}
	tlsCfg, err := pki.LoadServerTLS(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	admin, created, err := pki.EnsureTokenFile(filepath.Join(cfg.DataDir, AdminTokenFile))
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if created {
		log.Info("generated the operator (admin) token; use it with anvilctl",
			"file", filepath.Join(cfg.DataDir, AdminTokenFile),
			"hint", fmt.Sprintf("export ANVIL_TOKEN_FILE=%s ANVIL_CA=%s",
				filepath.Join(cfg.DataDir, AdminTokenFile), filepath.Join(cfg.DataDir, CAFile)))
	}
	bootTok, _, err := pki.EnsureTokenFile(filepath.Join(cfg.DataDir, BootTokenFile))
	if err != nil {
		return nil, fmt.Errorf("boot token: %w", err)
	}
	var keys server.Keys
	for file, k := range map[string]*string{BootTokenKeyFile: &keys.BootToken, PhoneHomeKeyFile: &keys.PhoneHome, BMCKeyFile: &keys.BMC} {
		if *k, _, err = pki.EnsureTokenFile(filepath.Join(cfg.DataDir, file)); err != nil {
			return nil, fmt.Errorf("signing key %s: %w", file, err)
		}
	}
	feedKey, _, err := pki.EnsureTokenFile(filepath.Join(cfg.DataDir, FeedKeyFile))
	if err != nil {
		return nil, fmt.Errorf("feed key %s: %w", FeedKeyFile, err)
	}
	st, err := openStore(ctx, cfg, feedKey, log)
	if err != nil {
		return nil, err
	}
	if err := pinIdentity(ctx, st, ca.Fingerprint(), keys, feedKey); err != nil {
		st.Close()
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	var bootLis net.Listener
	if cfg.Boot != nil {
		if bootLis, err = net.Listen("tcp", cfg.Boot.Listen); err != nil {
			lis.Close()
			st.Close()
			return nil, fmt.Errorf("boot service: listen %s: %w", cfg.Boot.Listen, err)
		}
		if cfg.Server.PhoneHomeURL == "" {
			cfg.Server.PhoneHomeURL = strings.TrimSuffix(cfg.Boot.BaseURL, "/") + "/phone-home"
		}
	}
	closeAll := func() {
		lis.Close()
		if bootLis != nil {
			bootLis.Close()
		}
		st.Close()
	}
	var srv *server.Server
	o := ops.New(ops.Source{Ping: st.Ping, Machines: func(ctx context.Context) (map[anvilv1.MachineState]int, error) { return srv.MachinesByState(ctx) },
		WaitStreams: func() int { return srv.WaitStreams() }, Leader: st.IsLeader})
	srv, err = server.New(o.Store(st), server.Credentials{AdminTokens: []string{admin}, BootTokens: append([]string{bootTok}, cfg.BootTokens...), Keys: keys},
		cfg.Server, server.WithLogger(log), server.WithLeader(st.IsLeader), server.WithChangesHeard(st.ChangesHeard))
	if err != nil {
		closeAll()
		return nil, err
	}
	var httpSrv *http.Server
	if cfg.Boot != nil {
		bc := *cfg.Boot
		if bc.AgentController == "" {
			bc.AgentController = lis.Addr().String()
		}
		if bc.CAFingerprint == "" {
			bc.CAFingerprint = ca.Fingerprint()
		}
		bs, err := boot.New(bc, srv, boot.WithLogger(log.With("service", "boot")))
		if err != nil {
			closeAll()
			return nil, err
		}
		// Bounds for unauthenticated clients: headers within 10 s and 16 KiB,
		// a request (bodies are small: phone home) within 30 s, idle
		// connections closed after 2 min, at most 1024 connections and 32
		// from one address (one host cannot hold every slot with slow
		// downloads). Writes are not bounded in time: an image download
		// takes minutes.
		httpSrv = &http.Server{Handler: bs.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
		bootLis = boot.LimitListener(bootLis, 1024, 32)
		if cfg.DHCP != nil && cfg.DHCP.ChainURL == "" {
			cfg.DHCP.ChainURL = bs.ChainURL()
		}
		if cfg.DHCP != nil && cfg.DHCP.EFIHTTPURL == "" {
			cfg.DHCP.EFIHTTPURL = bs.FileURL(cfg.DHCP.EFIFile)
		}
	}
	udp, err := startUDP(cfg, st, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	g := srv.NewGRPCServer(append(o.ServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		// Thousands of mostly idle agent connections: keep per-connection
		// buffers small and release write buffers between flushes.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(4<<10),
		grpc.WriteBufferSize(4<<10),
	)...)
	o.RegisterHealth(g)
	if err := o.Check(context.Background()); err != nil {
		log.Warn("store not answering", "err", err)
	}
	c := &Controller{
		Addr: lis.Addr(), CAFile: filepath.Join(cfg.DataDir, CAFile), CAFingerprint: ca.Fingerprint(),
		AdminToken: admin, BootToken: bootTok, store: st, srv: srv, grpc: g, log: log, http: httpSrv, done: make(chan error, 1), ops: o,
	}
	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			g.Stop()
			closeAll()
			return nil, fmt.Errorf("metrics listen %s: %w", cfg.MetricsListen, err)
		}
		c.MetricsAddr = ml.Addr()
		c.opsHTTP = &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := c.opsHTTP.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics service stopped", "err", err)
			}
		}()
		log.Info("metrics and health listening", "addr", ml.Addr().String())
	}
	c.runUDP(udp, log)
	c.runReplica(st, srv, log)
	c.runChecks(srv, st, cfg.Server.BMCCheckInterval, log)
	c.runSeen(srv, cfg.Server.SeenFlushInterval, log)
	c.runHealth(o)
	log.Info("controller listening", "addr", lis.Addr().String(), "ca_fingerprint", c.CAFingerprint, "data_dir", cfg.DataDir)
	if httpSrv != nil {
		c.BootAddr = bootLis.Addr()
		log.Info("boot service listening", "addr", bootLis.Addr().String(), "base_url", cfg.Boot.BaseURL)
		go func() {
			if err := httpSrv.Serve(bootLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("boot service stopped", "err", err)
			}
		}()
	}
	go func() {
		err := g.Serve(lis)
		if f := c.fault.Load(); f != nil {
			err = *f
		}
		c.done <- err
	}()
	return c, nil
}

// runChecks asks silent machines' BMCs for their power state every
// interval (0: never), so they show as Off or Hung rather than Dead, then
// runs the recovery sweep (power cycles of machines that did not come back
// from a reset into PXE, or crash-loop; server.RecoverMachines). With
// replicas, the leader checks the BMCs and sweeps every machine; the
// others follow up their own resets only.
func (c *Controller) runChecks(srv *server.Server, st *sqlstore.Store, every time.Duration, log *slog.Logger) {
	c.periodic(every, func(ctx context.Context) {
		if st.IsLeader() {
			if _, err := srv.CheckSilentMachines(ctx); err != nil && ctx.Err() == nil {
				log.Warn("checking silent machines' BMCs", "err", err)
			}
		}
		if _, err := srv.RecoverMachines(ctx); err != nil && ctx.Err() == nil {
			log.Warn("recovery power cycles", "err", err)
		}
	})
}

// runReplica follows the changes other replicas on the store commit (their
// wake-ups reach this controller's streams) and takes part in the leader
// election; both return at once on SQLite.
func (c *Controller) runReplica(st *sqlstore.Store, srv *server.Server, log *slog.Logger) {
	c.background(func(ctx context.Context) { st.Follow(ctx, srv.ApplyChange) })
	c.background(func(ctx context.Context) {
		st.Lead(ctx, func(leader bool) { log.Info("leader election", "leader", leader) })
	})
	c.background(func(ctx context.Context) {
		select {
		case <-ctx.Done():
		case <-st.Faulted():
			err := fmt.Errorf("stopped serving: %w", st.Fault())
			log.Error("the store cannot be served by this controller any more", "err", err)
			c.fault.Store(&err)
			c.grpc.Stop()
		}
	})
}

// runSeen writes the agents' last-seen times in batches (server.FlushSeen)
// every interval, and all of them at Stop.
func (c *Controller) runSeen(srv *server.Server, every time.Duration, log *slog.Logger) {
	c.periodic(every, func(ctx context.Context) {
		if _, err := srv.FlushSeen(ctx, false); err != nil && ctx.Err() == nil {
			log.Warn("writing last-seen times", "err", err)
		}
	})
	c.flushSeen = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := srv.FlushSeen(ctx, true)
		return err
	}
}

// background runs fn until Stop, with the periodic work.
func (c *Controller) background(fn func(ctx context.Context)) {
	if c.stopChecks == nil {
		c.checksCtx, c.stopChecks = context.WithCancel(context.Background())
	}
	ctx := c.checksCtx
	c.checks.Go(func() { fn(ctx) })
}

// periodic runs fn every interval (0: never), each run bounded by the
// interval, until Stop; the background work of the controller.
func (c *Controller) periodic(every time.Duration, fn func(ctx context.Context)) {
	if every <= 0 {
		return
	}
	c.background(func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				cctx, cancel := context.WithTimeout(ctx, every)
				fn(cctx)
				cancel()
			}
		}
	})
}

// Stop ends every stream at once (as a crash would, from the agents' side)
// and closes the store.
func (c *Controller) Stop() error {
	if c.stopChecks != nil {
		c.stopChecks()
		c.checks.Wait()
	}
	if c.flushSeen != nil {
		if err := c.flushSeen(); err != nil {
			// Soft state: the agents' next heartbeats bring it back.
			c.log.Warn("writing the last-seen times at stop", "err", err)
		}
	}
	if c.stopUDP != nil {
		c.stopUDP()
		c.udp.Wait()
	}
	c.ops.Shutdown()
	var merr error
	if c.opsHTTP != nil {
		if merr = c.opsHTTP.Close(); merr != nil {
			merr = fmt.Errorf("metrics service: %w", merr)
		}
	}
	var herr error
	if c.http != nil {
		if herr = c.http.Close(); herr != nil {
			herr = fmt.Errorf("boot service: %w", herr)
		}
	}
	c.grpc.Stop()
	err := <-c.done
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return errors.Join(append(c.udpErr, merr, herr, err, c.store.Close())...)
}

// Shutdown stops gracefully: no new calls, unary calls finish, then streams
// are cut after timeout.
func (c *Controller) Shutdown(timeout time.Duration) error {
	stopped := make(chan struct{})
	go func() { c.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
	}
	return c.Stop()
}

// WaitStreams is how many agent Wait streams this controller holds.
func (c *Controller) WaitStreams() int { return c.srv.WaitStreams() }

// Leader reports whether this controller runs the periodic work (always
// on SQLite; the elected replica on PostgreSQL).
func (c *Controller) Leader() bool { return c.store.IsLeader() }

// ChangesHeard reports whether this controller hears every change the
// other replicas commit (its change feed is connected; always on SQLite).
func (c *Controller) ChangesHeard() bool { return c.store.ChangesHeard() }

// Done returns the Serve result once the server stops.
func (c *Controller) Done() <-chan error { return c.done }

// udpServer is a DHCP or TFTP server to run until Stop.
type udpServer struct {
	name  string
	serve func(context.Context) error
}

// startUDP opens the DHCP and TFTP sockets the config asks for; DHCP's
// full-mode leases live in st.
func startUDP(cfg Config, st *sqlstore.Store, log *slog.Logger) ([]udpServer, error) {
	var out []udpServer
	if cfg.DHCP != nil {
		opts, err := dhcp.Listen(cfg.DHCPInterface, cfg.DHCP.Mode)
		if err != nil {
			return nil, err
		}
		// Full mode keeps its leases in the store: replicas on one
		// database share them; one controller keeps them across restarts.
		d, err := dhcp.New(*cfg.DHCP, append(opts, dhcp.WithLogger(log.With("service", "dhcp")),
			dhcp.WithLeases(st.LeaseBook(cfg.DHCP.PoolStart, cfg.DHCP.PoolEnd)))...)
		if err != nil {
			return nil, err
		}
		log.Info("DHCP serving", "mode", cfg.DHCP.Mode, "interface", cfg.DHCPInterface, "chain_url", cfg.DHCP.ChainURL)
		out = append(out, udpServer{"DHCP", d.Serve})
		if cfg.RouterAdvertisements && cfg.DHCP.Mode == dhcp.Full {
			r, err := ra.Listen(cfg.DHCPInterface, log.With("service", "ra"))
			if err != nil {
				return nil, err
			}
			log.Info("answering IPv6 router solicitations (nothing offered)", "interface", cfg.DHCPInterface)
			out = append(out, udpServer{"RA", r.Serve})
		}
	}
	if len(cfg.TFTPFiles) > 0 {
		t, err := tftp.New(cfg.TFTPFiles, tftp.WithLogger(log.With("service", "tftp")))
		if err != nil {
			return nil, err
		}
		pc, err := net.ListenPacket("udp4", cfg.TFTPListen)
		if err != nil {
			return nil, fmt.Errorf("TFTP listen %s: %w", cfg.TFTPListen, err)
		}
		log.Info("TFTP serving", "addr", pc.LocalAddr().String(), "files", len(cfg.TFTPFiles))
		out = append(out, udpServer{"TFTP", func(ctx context.Context) error { return t.Serve(ctx, pc) }})
	}
	return out, nil
}

// runUDP runs the servers until Stop; a server that fails is logged and
// its error returned by Stop.
func (c *Controller) runUDP(servers []udpServer, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	c.stopUDP = cancel
	for _, s := range servers {
		c.udp.Add(1)
		go func() {
			defer c.udp.Done()
			if err := s.serve(ctx); err != nil {
				log.Error(s.name+" server stopped", "err", err)
				c.udpMu.Lock()
				c.udpErr = append(c.udpErr, fmt.Errorf("%s: %w", s.name, err))
				c.udpMu.Unlock()
			}
		}()
	}
}

// openStore opens the configured store: PostgreSQL for a postgres:// or
// postgresql:// URL, else the SQLite file in the data directory.
func openStore(ctx context.Context, cfg Config, feedKey string, log *slog.Logger) (*sqlstore.Store, error) {
	switch {
	case cfg.Store == "":
		return sqlstore.OpenSQLite(ctx, filepath.Join(cfg.DataDir, DBFile), sqlstore.WithLogger(log))
	case strings.HasPrefix(cfg.Store, "postgres://"), strings.HasPrefix(cfg.Store, "postgresql://"):
		deadline := time.Now().Add(cfg.StoreWait)
		for {
			st, err := sqlstore.OpenPostgres(ctx, cfg.Store, sqlstore.WithLogger(log), sqlstore.WithFeedKey(feedKey))
			if err == nil || !errors.Is(err, sqlstore.ErrUnreachable) || time.Now().Add(storeRetry).After(deadline) {
				return st, err
			}
			log.Warn("store unreachable; trying again", "err", err, "retry", storeRetry, "until", deadline.Format(time.RFC3339))
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
			case <-time.After(storeRetry):
			}
		}
	}
	shown := "(unparsable)"
	if u, err := url.Parse(cfg.Store); err == nil {
		shown = u.Redacted()
	}
	return nil, fmt.Errorf("store %s: want a postgres:// URL, or nothing for SQLite in the data directory", shown)
}

// storeRetry is the wait between attempts to open an unreachable store.
const storeRetry = 2 * time.Second

// runHealth checks the store every healthEvery, so the gRPC health service
// says NOT_SERVING while it does not answer.
func (c *Controller) runHealth(o *ops.Ops) {
	c.periodic(healthEvery, func(ctx context.Context) {
		o.Check(ctx) //nolint:errcheck // the health status says it
	})
}

// healthEvery is how often the store is checked for the health service.
const healthEvery = 5 * time.Second

// pinIdentity checks that this data directory's CA and keys are the ones
// every other controller on the store uses (the first to use the store
// pins them): a replica started from another data directory is refused,
// not left to fail on every boot token, phone home and sealed BMC address
// the others made.
func pinIdentity(ctx context.Context, st *sqlstore.Store, caFingerprint string, keys server.Keys, feedKey string) error {
	pins := []struct{ name, value string }{
		{"ca", caFingerprint},
		{"key:boot-token", keyFingerprint(keys.BootToken)},
		{"key:phone-home", keyFingerprint(keys.PhoneHome)},
		{"key:bmc", keyFingerprint(keys.BMC)},
		{"key:feed", keyFingerprint(feedKey)},
	}
	for _, p := range pins {
		if err := st.Pin(ctx, p.name, p.value); err != nil {
			if errors.Is(err, sqlstore.ErrPinMismatch) {
				return fmt.Errorf("the data directory's %w: controllers sharing a database must share the CA and keys/ (copy ca.crt, ca.key and keys/ from a running replica's data directory)", err)
			}
			return err
		}
	}
	return nil
}

// keyFingerprint identifies a key without revealing it.
func keyFingerprint(key string) string {
	sum := sha256.Sum256([]byte("anvil key fingerprint\x00" + key))
	return hex.EncodeToString(sum[:])
}
