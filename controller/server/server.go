// Package server implements anvil-controller's gRPC services: the agent API
// (Register, Wait, Report, Heartbeat) and the operator API (machines, their
// power through controller/bmc, images, sizes). Handlers are thin: they
// check what the store must confirm, fold events through the lifecycle
// state machine, write one transaction and wake waiting streams through the
// hub after it committed. Power calls talk to the BMC outside any
// transaction and record their event afterwards, with the actor who asked.
// The controller's own BMC work runs periodically: CheckSilentMachines
// (silent machines' power state) and RecoverMachines (recovery power
// cycles), both paced by controller/powerpolicy (one BMC event per change
// of a BMC's condition, backoff, bounded attempts).
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bootobs"
	"github.com/anvil-metal/anvil/controller/hub"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/powerpolicy"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Config holds the controller's tunables.
type Config struct {
	// HeartbeatInterval is what agents are told to use.
	HeartbeatInterval time.Duration
	// SeenFlushInterval is how often the agents' last-seen times are
	// written (FlushSeen, one transaction), and SeenFlushLag how far a
	// machine's stored LastSeen may lag before it is written.
	SeenFlushInterval time.Duration
	SeenFlushLag      time.Duration
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
	// is accepted at Register (once).
	BootTokenTTL time.Duration
	// BindBootTokenAddress refuses a boot token at Register from another
	// client address than the one its script was served to. Switch it off
	// when agents reach the controller through another interface or NAT
	// than the one they network-boot from.
	BindBootTokenAddress bool
	// EnrollPolicy decides whether unknown machines (and unexpected boots
	// of known ones) are trusted at once or await an operator's approval.
	EnrollPolicy trust.Policy
	// LiveWindow: a machine seen less than this ago has a live agent
	// session, which a registration the controller did not expect cannot
	// take over.
	LiveWindow time.Duration
	// ExpectBootWindow is how long the controller expects a machine to
	// boot after it freed, reinstalled or power-cycled it, or its agent
	// announced a reboot.
	ExpectBootWindow time.Duration
	// PhoneHomeTTL is how long an Install's phone-home token is good.
	PhoneHomeTTL time.Duration
	// MaxWaitStreams is how many Wait streams one machine may hold at once.
	MaxWaitStreams int
	// RegisterRate and RegisterBurst bound Register calls per client
	// address (token bucket); a rate of 0 switches the limit off.
	RegisterRate  float64
	RegisterBurst int
	// SecurityEventEvery is the shortest interval between two SECURITY
	// events of one machine (more are logged, not stored).
	SecurityEventEvery time.Duration
	// BMCEnroll: whether agents enroll their machine's BMC in-band (boot
	// scripts ask them to, and Register stores what they report).
	BMCEnroll trust.BMCPolicy
	// BMCTimeout bounds each power operation on a machine's BMC.
	BMCTimeout time.Duration
	// BMCCheckInterval is how often the BMCs of silent machines (dead
	// agents, not in their installed system) are asked for the power
	// state, which shows them as Off or Hung; 0 switches it off.
	BMCCheckInterval time.Duration
	// BMCBackoffMax caps the wait before the periodic checks and sweeps
	// ask a failing (unreachable, garbled, refusing) BMC again: the wait
	// starts at BMCCheckInterval and doubles with each failure in a row.
	// A BMC that refused the credentials is not asked again at all until
	// its address is set again or an operator's power action through it
	// succeeds.
	BMCBackoffMax time.Duration
	// BootDeadline is how long a machine has to show its agent after the
	// controller reset it into PXE to get it (free, reinstall), or to end
	// a crash loop, before RecoverMachines power-cycles it into PXE; the
	// k-th power cycle gives it BootDeadline·2^k. 0 switches recovery
	// power cycles off.
	BootDeadline time.Duration
	// BootPowerCycles is how many recovery power cycles a machine gets at
	// most (0 to powerpolicy.MaxCycles); then one event says it is left
	// alone until an operator acts.
	BootPowerCycles int
	Lifecycle       lifecycle.Config
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval:    10 * time.Second,
		KeepaliveInterval:    30 * time.Second,
		SeenFlushInterval:    5 * time.Second,
		SeenFlushLag:         15 * time.Second,
		EventHistory:         500,
		FreeEraseMode:        anvilv1.EraseMode_ERASE_MODE_QUICK,
		RegisterEraseMode:    anvilv1.EraseMode_ERASE_MODE_NONE,
		WatchBuffer:          1024,
		BootTokenTTL:         15 * time.Minute,
		BindBootTokenAddress: true,
		EnrollPolicy:         trust.PolicyAuto,
		LiveWindow:           30 * time.Second,
		ExpectBootWindow:     time.Hour,
		PhoneHomeTTL:         24 * time.Hour,
		MaxWaitStreams:       4,
		RegisterRate:         10,
		RegisterBurst:        50,
		SecurityEventEvery:   10 * time.Second,
		BMCEnroll:            trust.BMCInBand,
		BMCTimeout:           bmc.DefaultTimeout,
		BMCCheckInterval:     time.Minute,
		BMCBackoffMax:        30 * time.Minute,
		BootDeadline:         10 * time.Minute,
		BootPowerCycles:      3,
		Lifecycle:            lifecycle.DefaultConfig(),
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
	if _, err := trust.ParseBMCPolicy(string(c.BMCEnroll)); err != nil {
		errs = append(errs, err)
	}
	if _, err := trust.ParsePolicy(string(c.EnrollPolicy)); err != nil {
		errs = append(errs, err)
	}
	for what, d := range map[string]time.Duration{"live window": c.LiveWindow, "expected boot window": c.ExpectBootWindow,
		"phone-home token TTL": c.PhoneHomeTTL, "security event interval": c.SecurityEventEvery} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive", what, d))
		}
	}
	if c.SeenFlushInterval <= 0 || c.SeenFlushLag <= 0 {
		errs = append(errs, fmt.Errorf("last-seen flush interval %v and lag %v must be positive", c.SeenFlushInterval, c.SeenFlushLag))
	} else if hb := c.HeartbeatInterval; hb > 0 && hb < c.LiveWindow {
		// A stored LastSeen lags the last heartbeat by up to the lag
		// rounded up to whole heartbeats, plus one flush interval.
		if worst := (c.SeenFlushLag+hb-1)/hb*hb + c.SeenFlushInterval; worst >= c.LiveWindow {
			errs = append(errs, fmt.Errorf("last-seen flush lag %v (rounded up to heartbeats of %v) + interval %v = %v must be under the live window %v (other replicas read the stored time)",
				c.SeenFlushLag, hb, c.SeenFlushInterval, worst, c.LiveWindow))
		}
	}
	if dead := c.Lifecycle.DeadTimeout; dead > 0 && c.LiveWindow > dead {
		errs = append(errs, fmt.Errorf("live window %v is longer than the dead timeout %v (a dead machine cannot have a live session)", c.LiveWindow, dead))
	}
	if c.BMCCheckInterval < 0 {
		errs = append(errs, fmt.Errorf("BMC check interval %v is negative", c.BMCCheckInterval))
	}
	if c.BMCBackoffMax <= 0 {
		errs = append(errs, fmt.Errorf("BMC backoff max %v must be positive", c.BMCBackoffMax))
	}
	if err := (powerpolicy.Limits{Deadline: c.BootDeadline, Max: c.BootPowerCycles}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxWaitStreams < 1 {
		errs = append(errs, fmt.Errorf("max Wait streams %d must be at least 1", c.MaxWaitStreams))
	}
	if c.RegisterRate < 0 || (c.RegisterRate > 0 && c.RegisterBurst < 1) {
		errs = append(errs, fmt.Errorf("register rate %g/s with burst %d: want a rate >= 0 and a burst >= 1", c.RegisterRate, c.RegisterBurst))
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
	// BootTokens authorize Register of host-mode agents (agents that were
	// not network-booted). Network boots get per-boot tokens instead.
	BootTokens []string
	// Keys sign the controller's own tokens and seal stored secrets, one
	// key per purpose; none is derived from a token that agents or
	// operators hold.
	Keys Keys
}

// Keys are the controller's keys (at least 16 bytes each). An empty key is
// replaced by a random one at New: what it signed or sealed does not
// survive a restart (tests); the controller keeps its keys in its data
// directory.
type Keys struct {
	// BootToken signs the per-boot tokens the boot service hands out.
	BootToken string
	// PhoneHome signs installed systems' phone-home tokens.
	PhoneHome string
	// BMC seals the BMC addresses (with their credentials) in the store.
	BMC string
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
	// bmcSeal seals BMC addresses (credentials) in the store.
	bmcSeal *pki.Sealer
	// openBMC returns the driver of a BMC address; bmcLocks serializes the
	// operations on one BMC (BMCs have few session slots and may serve one
	// request at a time).
	openBMC  func(addr string) (bmc.Driver, error)
	bmcLocks keyedLocks
	// bootObs holds the network boots the boot service saw (never acted
	// on); regLimit, streams and secEvents are the per-source and
	// per-machine limits.
	bootObs   *bootobs.Book
	regLimit  *sourceLimiter
	streams   streamCount
	secEvents every
	// checks holds what silent machines' BMCs said (CheckSilentMachines);
	// health how each machine's BMC answered last (noteBMC); cycles the
	// recovery watches (RecoverMachines).
	checks perMachine[powerCheck]
	health bmcHealth
	cycles recoveryCycles
	// seen holds the agents' last-seen times between batched writes
	// (seen.go).
	seen lastSeen
	// leads reports whether this controller leads its replicas' periodic
	// work (WithLeader; always without replicas).
	leads func() bool
	// creds caches the machines of heartbeating credentials while heard
	// says this controller hears every change committed to the store
	// (credcache.go; WithChangesHeard).
	creds credCache
	heard func() bool
	// fresh holds the machines registered here whose agent has not opened
	// a Wait stream since (Wait): their first stream opens in one write
	// transaction, a reconnect reads first and writes only when it must.
	fresh perMachine[struct{}]
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithLeader tells the server whether it leads the periodic work of
// replicas on one store (default: it always does).
func WithLeader(leads func() bool) Option { return func(s *Server) { s.leads = leads } }

// WithChangesHeard tells the server whether it hears every change other
// controllers commit to the store (the change feed is connected; always
// for one controller on SQLite); heartbeat credentials are cached only
// then (default: never, so a server not told does not cache).
func WithChangesHeard(heard func() bool) Option { return func(s *Server) { s.heard = heard } }

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
	s := &Server{store: st, hub: hub.New(), cfg: cfg, log: slog.Default(), now: time.Now, leads: func() bool { return true },
		heard: func() bool { return false }}
	s.openBMC = func(addr string) (bmc.Driver, error) { return bmc.Open(addr, bmc.WithTimeout(cfg.BMCTimeout)) }
	for _, o := range opts {
		o(s)
	}
	s.bootObs = bootobs.New(bootobs.DefaultLimits())
	s.regLimit = newSourceLimiter(cfg.RegisterRate, cfg.RegisterBurst, 65536, s.now)
	s.secEvents = every{interval: cfg.SecurityEventEvery, max: 65536}
	keys := creds.Keys
	var err error
	for _, k := range []*string{&keys.BootToken, &keys.PhoneHome, &keys.BMC} {
		if *k != "" {
			continue
		}
		tok, err := pki.NewToken()
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		*k = tok
	}
	if keys.BootToken == keys.PhoneHome || keys.BMC == keys.BootToken || keys.BMC == keys.PhoneHome {
		return nil, errors.New("the boot-token, phone-home and BMC keys must differ (one key per purpose)")
	}
	if s.bmcSeal, err = pki.NewSealer(keys.BMC, "bmc"); err != nil {
		return nil, fmt.Errorf("BMC sealer: %w", err)
	}
	if s.bootSigner, err = pki.NewSigner(keys.BootToken, "boot", BootTokenPrefix); err != nil {
		return nil, fmt.Errorf("boot token signer: %w", err)
	}
	if s.phoneHome, err = pki.NewSigner(keys.PhoneHome, "phone-home", PhoneHomeTokenPrefix); err != nil {
		return nil, fmt.Errorf("phone-home token signer: %w", err)
	}
	s.auth = newAuthenticator(st, creds, s.bootSigner, s.now)
	s.auth.creds, s.auth.heard = &s.creds, s.heard
	return s, nil
}

// ApplyChange brings what another controller on the store committed to
// this one's streams (the store's change feed calls it): Wait streams of
// the machines it names look at the store again, and event watchers replay
// from it. A resync does that for every stream.
func (s *Server) ApplyChange(c store.Change) {
	if c.Resync {
		s.creds.clear()
		s.hub.WakeAll()
	}
	for _, e := range c.Events {
		s.hub.Publish(e)
	}
	for _, id := range c.Wake {
		s.wake(id)
	}
}

// wake makes machine id's Wait streams look at the store again, and its
// credential be looked up again (a wake is how every credential change
// is heard).
func (s *Server) wake(id string) {
	s.creds.forget(id)
	s.hub.Notify(id)
}

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
// machines it queued instructions for; the same effects are announced to
// the other controllers on the store (replicas) as part of the
// transaction, so they hear of them if and only if it committed. When the
// commit itself fails (its answer may have been lost after the database
// committed), this controller still wakes the machines, but publishes
// nothing: a needless wake costs a store read, a missed one leaves a
// replaced credential cached.
func (s *Server) commit(ctx context.Context, fn func(tx store.Tx, fx *effects) error) error {
	var fx effects
	done := false
	err := s.store.Tx(ctx, func(tx store.Tx) error {
		fx, done = effects{}, false
		if err := fn(tx, &fx); err != nil {
			return err
		}
		if err := tx.Announce(ctx, store.Change{Wake: fx.notify, Events: fx.events}); err != nil {
			return err
		}
		done = true
		return nil
	})
	if err != nil {
		if done { // fn succeeded; the commit failed or its answer was lost
			for _, id := range fx.notify {
				s.wake(id)
			}
		}
		return err
	}
	for _, e := range fx.events {
		s.hub.Publish(e)
	}
	for _, id := range fx.notify {
		s.wake(id)
	}
	return nil
}

// record folds events into m's status, writes m (created or updated), then
// appends the events and trims the history.
func (s *Server) record(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, create bool, evs ...*anvilv1.Event) error {
	for _, e := range evs {
		e.MachineId = m.ID
		m.Status = lifecycle.Apply(m.Status, e, s.cfg.Lifecycle)
		s.trustFollows(m, e)
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

// trustFollows updates what the controller expects of m after event e:
// a boot it caused or was told of (free, reinstall, a power action, a
// reboot or power-off the agent announced), and the allocation generation
// that phone-home tokens are bound to (allocate, reinstall and free revoke
// the earlier ones).
func (s *Server) trustFollows(m *store.Machine, e *anvilv1.Event) {
	switch e.GetType() {
	case anvilv1.EventType_EVENT_TYPE_RECLAIM, anvilv1.EventType_EVENT_TYPE_REINSTALL, anvilv1.EventType_EVENT_TYPE_POWER,
		anvilv1.EventType_EVENT_TYPE_REBOOTING, anvilv1.EventType_EVENT_TYPE_POWERING_OFF:
		s.expectBoot(m, strings.ToLower(strings.TrimPrefix(e.GetType().String(), "EVENT_TYPE_")))
	}
	switch e.GetType() {
	case anvilv1.EventType_EVENT_TYPE_ALLOCATED, anvilv1.EventType_EVENT_TYPE_REINSTALL, anvilv1.EventType_EVENT_TYPE_RECLAIM:
		m.Trust.Generation++
	}
}

// expectBoot records that the controller caused (or was told of) a boot
// of m now, for the reason why, for ExpectBootWindow.
func (s *Server) expectBoot(m *store.Machine, why string) {
	now := s.now()
	m.Trust.ExpectBootSince, m.Trust.ExpectBootUntil = now, now.Add(s.cfg.ExpectBootWindow)
	m.Trust.ExpectBootWhy = fmt.Sprintf("%s at %s", why, now.UTC().Format(time.RFC3339))
}

// queue adds an instruction for m and wakes its Wait streams after commit.
// A Wipe carries the machine's ATA erase password.
func (s *Server) queue(ctx context.Context, tx store.Tx, fx *effects, m *store.Machine, in *anvilv1.Instruction) error {
	if w := in.GetWipe(); w != nil && w.GetAtaPassword() == "" {
		w.AtaPassword = m.Trust.ATAPassword
	}
	in.Id = newID("in-")
	if err := tx.CreateInstruction(ctx, &store.Instruction{ID: in.Id, MachineID: m.ID, Instruction: in, CreatedAt: s.now()}); err != nil {
		return err
	}
	fx.notify = append(fx.notify, m.ID)
	return nil
}
