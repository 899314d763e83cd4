// Package server implements anvil-controller's gRPC services: the agent API
// (Register, Wait, Report, Heartbeat) and the operator API (machines, their
// power through controller/bmc, images, sizes). Handlers are thin: they
// check what the store must confirm, fold events through the lifecycle
// state machine, write one transaction and wake waiting streams through the
// hub after it committed. Power calls talk to the BMC outside any
// transaction and record their event afterwards.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/hub"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Config holds the controller's tunables.
type Config struct {
	// HeartbeatInterval is what agents are told to use.
	HeartbeatInterval time.Duration
	// KeepaliveInterval is how often an idle Wait stream gets a keepalive.
	KeepaliveInterval time.Duration
	// EventHistory is how many events are kept per machine (older ones are
	// trimmed; the derived state is kept whole).
	EventHistory int
	// FreeEraseMode is used when FreeMachine names no erase mode.
	FreeEraseMode anvilv1.EraseMode
	// RegisterEraseMode is queued as a Wipe when an unallocated machine
	// registers; ERASE_MODE_NONE queues nothing.
	RegisterEraseMode anvilv1.EraseMode
	// EraseFallback lets a secure erase fall back to a verified full
	// overwrite on disks without a usable hardware erase (the Wipe's
	// allow_fallback); otherwise such a disk fails the wipe.
	EraseFallback bool
	// WatchBuffer is how many events a WatchEvents stream may lag behind
	// before it is ended (the client resumes from its last seq).
	WatchBuffer int
	// PhoneHomeURL is where installed systems report that they booted (the
	// boot service's /phone-home); empty: Install instructions carry no
	// phone-home token and only the agent reports.
	PhoneHomeURL string
	// BootTokenTTL is how long a boot token minted for one network boot
	// is accepted at Register.
	BootTokenTTL time.Duration
	// BMCTimeout bounds each power operation on a machine's BMC.
	BMCTimeout time.Duration
	Lifecycle  lifecycle.Config
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 10 * time.Second,
		KeepaliveInterval: 30 * time.Second,
		EventHistory:      500,
		FreeEraseMode:     anvilv1.EraseMode_ERASE_MODE_QUICK,
		RegisterEraseMode: anvilv1.EraseMode_ERASE_MODE_NONE,
		WatchBuffer:       1024,
		BootTokenTTL:      time.Hour,
		BMCTimeout:        bmc.DefaultTimeout,
		Lifecycle:         lifecycle.DefaultConfig(),
	}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat interval %v must be positive", c.HeartbeatInterval))
	}
	if c.KeepaliveInterval <= 0 {
		errs = append(errs, fmt.Errorf("keepalive interval %v must be positive", c.KeepaliveInterval))
	}
	if c.EventHistory < 10 {
		errs = append(errs, fmt.Errorf("event history %d must be at least 10", c.EventHistory))
	}
	if c.FreeEraseMode == anvilv1.EraseMode_ERASE_MODE_UNSPECIFIED {
		errs = append(errs, errors.New("free erase mode must be set"))
	}
	if c.RegisterEraseMode == anvilv1.EraseMode_ERASE_MODE_UNSPECIFIED {
		errs = append(errs, errors.New("register erase mode must be set (none to disable)"))
	}
	if c.BootTokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("boot token TTL %v must be positive", c.BootTokenTTL))
	}
	if c.BMCTimeout <= 0 {
		errs = append(errs, fmt.Errorf("BMC timeout %v must be positive", c.BMCTimeout))
	}
	if c.WatchBuffer < 1 {
		errs = append(errs, fmt.Errorf("watch buffer %d must be positive", c.WatchBuffer))
	}
	return errors.Join(append(errs, c.Lifecycle.Validate())...)
}

// Credentials are the secrets the controller accepts.
type Credentials struct {
	// AdminTokens authorize the operator API.
	AdminTokens []string
	// BootTokens authorize Register. The first one is also the secret the
	// per-boot boot tokens and the phone-home tokens are signed with.
	BootTokens []string
}

// Server holds the state shared by all services.
type Server struct {
	store store.Store
	hub   *hub.Hub
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	auth  *authenticator
	// bootSigner mints the short-lived boot tokens of network boots;
	// phoneHome the allocation-bound tokens of installed systems.
	bootSigner, phoneHome *pki.Signer
	// openBMC returns the driver of a BMC address; bmcLocks serializes the
	// operations on one BMC (QEMU serves one QMP client at a time).
	openBMC  func(addr string) (bmc.Driver, error)
	bmcLocks keyedLocks
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithClock sets the time source (tests).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New builds a server on st.
func New(st store.Store, creds Credentials, cfg Config, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("controller config: %w", err)
	}
	if len(creds.AdminTokens) == 0 || len(creds.BootTokens) == 0 {
		return nil, errors.New("controller needs at least one admin token and one boot token")
	}
	s := &Server{store: st, hub: hub.New(), cfg: cfg, log: slog.Default(), now: time.Now}
	s.openBMC = func(addr string) (bmc.Driver, error) { return bmc.Open(addr, bmc.WithTimeout(cfg.BMCTimeout)) }
	for _, o := range opts {
		o(s)
	}
	var err error
	if s.bootSigner, err = pki.NewSigner(creds.BootTokens[0], "boot", BootTokenPrefix); err != nil {
		return nil, fmt.Errorf("boot token signer: %w", err)
	}
	if s.phoneHome, err = pki.NewSigner(creds.BootTokens[0], "phone-home", PhoneHomeTokenPrefix); err != nil {
		return nil, fmt.Errorf("phone-home token signer: %w", err)
	}
	s.auth = newAuthenticator(st, creds, s.bootSigner, s.now)
	return s, nil
}

// Hub exposes the server's hub (the boot service records events through it).
func (s *Server) Hub() *hub.Hub { return s.hub }

// RegisterServices adds every service to g.
func (s *Server) RegisterServices(g *grpc.Server) {
	anvilv1.RegisterAgentServiceServer(g, &agentAPI{Server: s})
	anvilv1.RegisterMachineServiceServer(g, &machineAPI{Server: s})
	anvilv1.RegisterImageServiceServer(g, &imageAPI{Server: s})
	anvilv1.RegisterSizeServiceServer(g, &sizeAPI{Server: s})
}

// onShortStack runs fn on a short-lived goroutine and waits for it.
// Long-lived stream goroutines (one per waiting agent, for hours) call the
// store through it: SQLite's deep frames grow a goroutine's stack, and a
// stack that grew stays grown while its goroutine lives. A panic in fn is
// re-raised on the caller's goroutine, so the recovery interceptor sees it.
func onShortStack(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{panic: p}
			}
		}()
		done <- result{err: fn()}
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// newID returns a random identifier with the given prefix.
func newID(prefix string) string { return prefix + rand.Text()[:20] }

// effects collects what must happen after a transaction commits.
type effects struct {
	events []*anvilv1.Event
	notify []string
}

// commit runs fn in a transaction, then publishes its events and wakes the
// machines it queued instructions for.
func (s *Server) commit(ctx context.Context, fn func(tx store.Tx, fx *effects) error) error {
	var fx effects
	err := s.store.Tx(ctx, func(tx store.Tx) error {
		fx = effects{}
		return fn(tx, &fx)
	})
	if err != nil {
		return err
	}
	for _, e := range fx.events {
		s.hub.Publish(e)
	}
	for _, id := range fx.notify {
		s.hub.Notify(id)
	}
	return nil
}

// record folds events into m's status, writes m (created or updated), then
// appends the events and trims the history.
func (s *Server) record(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, create bool, evs ...*anvilv1.Event) error {
	for _, e := range evs {
		e.MachineId = m.ID
		m.Status = lifecycle.Apply(m.Status, e, s.cfg.Lifecycle)
	}
	var err error
	if create {
		err = tx.CreateMachine(ctx, m)
	} else {
		err = tx.UpdateMachine(ctx, m)
	}
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := tx.AppendEvent(ctx, e); err != nil {
			return err
		}
		fx.events = append(fx.events, e)
	}
	if len(evs) > 0 {
		return tx.TrimEvents(ctx, m.ID, s.cfg.EventHistory)
	}
	return nil
}

// queue adds an instruction for m and wakes its Wait streams after commit.
func (s *Server) queue(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, in *anvilv1.Instruction) error {
	in.Id = newID("in-")
	if err := tx.CreateInstruction(ctx, &store.Instruction{ID: in.Id, MachineID: m.ID, Instruction: in, CreatedAt: s.now()}); err != nil {
		return err
	}
	fx.notify = append(fx.notify, m.ID)
	return nil
}
