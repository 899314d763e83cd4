// Package runner is anvil-agent's control loop: it registers with the
// controller, holds the Wait stream, sends heartbeats and carries out each
// instruction through an Executor, exactly once.
//
// The controller may run as several replicas on one database; the runner
// is given all their addresses (package ctrladdr) and holds one connection
// to one replica at a time (dial.go). When that replica dies, the runner
// re-opens its Wait stream and retries its reports on another with the same
// capped, jittered backoff, keeping its session (its credential is in the
// shared database): it registers again only when a controller refuses the
// credential.
//
// Delivery contract (see proto/anvil/v1/agent.proto): the controller re-sends
// an instruction on every Wait stream until the agent reports on it. The
// runner acknowledges an instruction (reports its start event, retrying until
// the controller has it) before executing anything, and remembers every
// instruction id it has taken, so a re-sent instruction is never applied
// twice and an unacknowledged one is never applied at all.
package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/ctrladdr"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Errors an Outcome's Then may return to steer the runner.
var (
	// ErrRestart makes Run start over with a fresh registration, as after
	// a reboot (host mode emulates reboots this way).
	ErrRestart = errors.New("agent restart requested")
	// ErrStop makes Run return nil (power off in host mode).
	ErrStop = errors.New("agent stop requested")
)

// ErrNoExecutor is reported (as a FAILED event) for an instruction kind this
// agent cannot carry out.
var ErrNoExecutor = errors.New("no executor for this instruction in this agent")

// Progress lets an executor report how far it got. Calls are cheap: the
// runner forwards at most one update per ProgressInterval.
type Progress interface {
	Update(done, total uint64)
}

// Noter is implemented by the Progress the runner hands to executors: Note
// reports a milestone (one disk erased, with its method and duration) as an
// event right away, unthrottled.
type Noter interface {
	Note(msg string)
}

// Outcome is what a successful execution reports.
type Outcome struct {
	// Type and Message of the closing event; Type UNSPECIFIED sends none.
	Type    anvilv1.EventType
	Message string
	// Then runs after the closing event was acknowledged by the controller
	// (kexec, reboot, power off), so no report is lost to the action.
	Then func(ctx context.Context) error
}

// Executor carries out one kind of instruction.
type Executor interface {
	Execute(ctx context.Context, in *anvilv1.Instruction, p Progress) (Outcome, error)
}

// Executors maps instruction kinds to executors; a nil one makes the
// instruction fail with ErrNoExecutor.
type Executors struct {
	Wipe, Install, Reboot, PowerOff Executor
}

// Config configures the runner.
type Config struct {
	// Controller is the agent API's address: HOST:PORT, the replicas'
	// HOST:PORT comma-separated, or one DNS name with a record per replica
	// (ctrladdr.Parse).
	Controller string
	// TLS verifies the controller; gRPC sets its server name to the host
	// of each address. Either TLS or TLSFor is required.
	TLS *tls.Config
	// TLSFor builds the TLS configuration that verifies the controller at
	// an address whose host is serverName; used instead of TLS when set.
	// A fingerprint pin checked against the dialled host needs it
	// (pki.ClientTLS(ca, fp, pki.WithServerName(serverName))).
	TLSFor func(serverName string) (*tls.Config, error)
	// BootToken authorizes Register.
	BootToken    string
	AgentVersion string
	// Inventory is collected before every registration.
	Inventory func(ctx context.Context) (*anvilv1.Inventory, error)
	// EnrollBMC sets the BMC user the controller asked for
	// (RegisterResponse.bmc_enrollment) on the machine's BMC in-band and
	// says what it did; the runner reports the outcome as EVENT_TYPE_BMC.
	// Nil: such a request is reported as failed.
	EnrollBMC func(ctx context.Context, c *anvilv1.BMCCredential) (string, error)
	Executors Executors
	// Backoff governs every retry (connect, register, report).
	Backoff backoff.Policy
	// ProgressInterval bounds how often progress is reported.
	ProgressInterval time.Duration
	// CallTimeout bounds each unary call.
	CallTimeout time.Duration
}

// Defaults fills unset tunables.
func (c Config) Defaults() Config {
	if c.Backoff.Base == 0 {
		c.Backoff = backoff.Default()
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 2 * time.Second
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.AgentVersion == "" {
		c.AgentVersion = "dev"
	}
	return c
}

// Validate reports every missing field.
func (c Config) Validate() error {
	var errs []error
	if _, err := ctrladdr.Parse(c.Controller); err != nil {
		errs = append(errs, fmt.Errorf("controller address: %w", err))
	}
	if c.TLS == nil && c.TLSFor == nil {
		errs = append(errs, errors.New("TLS configuration is required (CA file or fingerprint)"))
	}
	if c.BootToken == "" {
		errs = append(errs, errors.New("boot token is required"))
	}
	if c.Inventory == nil {
		errs = append(errs, errors.New("an inventory source is required"))
	}
	if c.Backoff.Base <= 0 || c.Backoff.Cap < c.Backoff.Base {
		errs = append(errs, fmt.Errorf("backoff base %v / cap %v are invalid", c.Backoff.Base, c.Backoff.Cap))
	}
	return errors.Join(errs...)
}

// Runner is one agent's control loop.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	dialOpts []grpc.DialOption
	inOrder  bool
	conn     *grpc.ClientConn
	api      anvilv1.AgentServiceClient

	mu        sync.Mutex
	machineID string
	cred      string
	taken     map[string]bool // instruction ids acknowledged or abandoned
}

// Option configures a Runner.
type Option func(*Runner)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Runner) { r.log = l } }

// WithDialOptions adds gRPC dial options (tests, benchmarks).
func WithDialOptions(o ...grpc.DialOption) Option {
	return func(r *Runner) { r.dialOpts = append(r.dialOpts, o...) }
}

// WithAddressOrder makes the runner try the controller addresses in the
// order given instead of a shuffled one (tests; a site that prefers one
// replica).
func WithAddressOrder() Option { return func(r *Runner) { r.inOrder = true } }

// New prepares a runner; it does not connect yet.
func New(cfg Config, opts ...Option) (*Runner, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	r := &Runner{cfg: cfg, log: slog.Default(), taken: make(map[string]bool)}
	for _, o := range opts {
		o(r)
	}
	addrs, err := ctrladdr.Parse(cfg.Controller)
	if err != nil { // checked by Validate
		return nil, fmt.Errorf("agent config: %w", err)
	}
	var creds credentials.TransportCredentials
	if cfg.TLSFor != nil {
		creds = newPerServer(cfg.TLSFor)
	} else {
		creds = credentials.NewTLS(cfg.TLS)
	}
	tgt, res := target(addrs)
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultServiceConfig(serviceConfig(!r.inOrder)),
		grpc.WithConnectParams(connectParams(cfg.Backoff)),
	}
	if res != nil {
		dial = append(dial, grpc.WithResolvers(res))
	}
	conn, err := grpc.NewClient(tgt, append(dial, r.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", cfg.Controller, err)
	}
	r.conn = conn
	r.api = anvilv1.NewAgentServiceClient(conn)
	return r, nil
}

// Close releases the connection.
func (r *Runner) Close() error { return r.conn.Close() }

// MachineID is the id the controller gave at the last registration.
func (r *Runner) MachineID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.machineID
}

// Credential is the machine credential of the current session ("" before
// the first registration); the agent's own calls use it.
func (r *Runner) Credential() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cred
}

func (r *Runner) machineCreds() grpc.CallOption {
	r.mu.Lock()
	defer r.mu.Unlock()
	return grpc.PerRPCCredentials(pki.Bearer(r.cred))
}

// Run loops until ctx ends or an executor stops the agent. It never gives
// up on an unreachable controller: it retries with capped, jittered backoff.
//
// Sessions that end soon after they began back off too (the attempt count
// grows with every session shorter than a minute): two boards with one
// SMBIOS UUID, or an agent whose credential keeps being refused, retry
// slowly instead of at full speed.
func (r *Runner) Run(ctx context.Context) error {
	// BMC enrollments outlive the session that asked for them: the BMC is
	// changed, so its outcome is reported even when the session ends
	// first. They end with Run.
	life, stop := context.WithCancel(ctx)
	var enrolling sync.WaitGroup
	defer enrolling.Wait()
	defer stop()
	short := 0
	for {
		began := time.Now()
		err := r.runOnce(ctx, func(c *anvilv1.BMCCredential) {
			enrolling.Go(func() { r.enrollBMC(life, c) })
		})
		switch {
		case errors.Is(err, ErrStop):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrRestart):
			r.mu.Lock()
			r.taken = make(map[string]bool)
			r.mu.Unlock()
			r.log.Info("restarting agent loop")
			continue
		}
		if time.Since(began) < time.Minute {
			short++
		} else {
			short = 0
		}
		r.log.Warn("session ended; registering again", "err", err, "short_sessions", short)
		if short > 1 {
			if err := r.cfg.Backoff.Sleep(ctx, short-2); err != nil {
				return err
			}
		}
	}
}

// runOnce registers, then keeps a Wait stream and heartbeats until the
// credential is refused or an executor asks for a restart/stop. A BMC
// enrollment the registration asks for goes to enroll, which carries it
// out beside the session (a slow BMC must not make the session look dead).
func (r *Runner) runOnce(ctx context.Context, enroll func(*anvilv1.BMCCredential)) error {
	hb, c, err := r.register(ctx)
	if err != nil {
		return err
	}
	if c != nil {
		enroll(c)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan *anvilv1.Instruction, 16)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.heartbeat(ctx, hb) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case in := <-work:
				if err := r.handle(ctx, in); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	err = r.wait(ctx, work)
	cancel(err)
	wg.Wait()
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// register retries until the controller accepts the registration. It
// registers with the machine credential it holds, if any (a boot token is
// good for one registration), and with the boot token when it has none or
// the controller no longer knows it.
func (r *Runner) register(ctx context.Context) (time.Duration, *anvilv1.BMCCredential, error) {
	for attempt := 0; ; attempt++ {
		inv, err := r.cfg.Inventory(ctx)
		if err == nil {
			r.mu.Lock()
			tok := r.cred
			r.mu.Unlock()
			if tok == "" {
				tok = r.cfg.BootToken
			}
			req := &anvilv1.RegisterRequest{Inventory: inv, AgentVersion: r.cfg.AgentVersion}
			var resp *anvilv1.RegisterResponse
			cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
			resp, err = r.api.Register(cctx, req,
				grpc.PerRPCCredentials(pki.Bearer(tok)), grpc.WaitForReady(false))
			cancel()
			if status.Code(err) == codes.Unauthenticated && tok != r.cfg.BootToken {
				r.log.Warn("the controller no longer knows this machine's credential; registering with the boot token", "err", err)
				r.mu.Lock()
				r.cred = ""
				r.mu.Unlock()
			}
			if err == nil {
				r.mu.Lock()
				r.machineID, r.cred = resp.GetMachineId(), resp.GetCredential()
				r.mu.Unlock()
				r.log.Info("registered", "machine", resp.GetMachineId())
				hb := resp.GetHeartbeatInterval().AsDuration()
				if hb <= 0 {
					hb = 10 * time.Second
				}
				return hb, resp.GetBmcEnrollment(), nil
			}
		}
		r.log.Warn("register failed; retrying", "err", err, "attempt", attempt)
		if err := r.cfg.Backoff.Sleep(ctx, attempt); err != nil {
			return 0, nil, err
		}
	}
}

func (r *Runner) heartbeat(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
			_, err := r.api.Heartbeat(cctx, &anvilv1.HeartbeatRequest{}, r.machineCreds())
			cancel()
			if err != nil && ctx.Err() == nil {
				r.log.Debug("heartbeat failed", "err", err)
			}
		}
	}
}

// wait holds Wait streams, reopening them with backoff, and queues every
// instruction not taken yet. It returns when the credential is refused.
func (r *Runner) wait(ctx context.Context, work chan<- *anvilv1.Instruction) error {
	attempt := 0
	for {
		stream, err := r.api.Wait(ctx, &anvilv1.WaitRequest{}, r.machineCreds())
		for err == nil {
			var in *anvilv1.Instruction
			in, err = stream.Recv()
			if err != nil {
				break
			}
			attempt = 0
			if in.GetKeepalive() != nil || r.isTaken(in.GetId()) {
				continue
			}
			select {
			case work <- in:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if status.Code(err) == codes.Unauthenticated {
			return fmt.Errorf("wait: %w", err)
		}
		r.log.Warn("wait stream broken; reconnecting", "err", err, "attempt", attempt)
		if err := r.cfg.Backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
		attempt++
	}
}

func (r *Runner) isTaken(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.taken[id]
}

// take marks id taken; false if it already was (a duplicate queued from a
// second stream before the first copy was acknowledged).
func (r *Runner) take(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.taken[id] {
		return false
	}
	r.taken[id] = true
	return true
}

func (r *Runner) untake(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.taken, id)
}

// kindOf names an instruction, its executor and the event that
// acknowledges it.
func (r *Runner) kindOf(in *anvilv1.Instruction) (string, Executor, anvilv1.EventType) {
	switch {
	case in.GetWipe() != nil:
		return "wipe", r.cfg.Executors.Wipe, anvilv1.EventType_EVENT_TYPE_WIPING
	case in.GetInstall() != nil:
		return "install", r.cfg.Executors.Install, anvilv1.EventType_EVENT_TYPE_INSTALLING
	case in.GetReboot() != nil:
		return "reboot", r.cfg.Executors.Reboot, anvilv1.EventType_EVENT_TYPE_REBOOTING
	case in.GetPowerOff() != nil:
		return "power-off", r.cfg.Executors.PowerOff, anvilv1.EventType_EVENT_TYPE_POWERING_OFF
	}
	return "unknown", nil, anvilv1.EventType_EVENT_TYPE_FAILED
}

// handle acknowledges, executes and reports one instruction. It returns an
// error only to end the session (restart/stop requests, ctx end).
func (r *Runner) handle(ctx context.Context, in *anvilv1.Instruction) error {
	if !r.take(in.GetId()) {
		return nil
	}
	name, ex, start := r.kindOf(in)
	log := r.log.With("instruction", in.GetId(), "kind", name)
	if ex == nil {
		err := fmt.Errorf("%s: %w", name, ErrNoExecutor)
		log.Error("cannot execute", "err", err)
		_, err = r.ack(ctx, in.GetId(), anvilv1.EventType_EVENT_TYPE_FAILED, err.Error())
		return err
	}
	if ok, err := r.ack(ctx, in.GetId(), start, name+" started"); !ok {
		return err
	}
	log.Info("executing")
	exCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	p := &progress{r: r, id: in.GetId(), typ: start, every: r.cfg.ProgressInterval, started: time.Now(), withdraw: stop}
	out, err := ex.Execute(exCtx, in, p)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if c := context.Cause(exCtx); errors.Is(c, errWithdrawn) {
		log.Info("instruction withdrawn by the controller while running; stopped", "err", c)
		return nil
	}
	if err != nil {
		log.Error("failed", "err", err)
		return withdrawn(r.report(ctx, in.GetId(), anvilv1.EventType_EVENT_TYPE_FAILED, fmt.Sprintf("%s failed: %v", name, err), nil))
	}
	if out.Type != anvilv1.EventType_EVENT_TYPE_UNSPECIFIED {
		if err := r.report(ctx, in.GetId(), out.Type, out.Message, nil); err != nil {
			if werr := withdrawn(err); werr != nil {
				return werr
			}
			log.Info("instruction withdrawn while running; skipping what follows it", "err", err)
			return nil
		}
	}
	log.Info("done")
	if out.Then != nil {
		return out.Then(ctx)
	}
	return nil
}

// ack reports the first event of an instruction, retrying until the
// controller has it; only then (ok) may the instruction be carried out. A
// withdrawn instruction is abandoned (not ok, nil error); any other failure
// ends the session with the instruction released for the next one.
func (r *Runner) ack(ctx context.Context, id string, t anvilv1.EventType, msg string) (ok bool, err error) {
	err = r.report(ctx, id, t, msg, nil)
	if err == nil {
		return true, nil
	}
	if withdrawn(err) == nil {
		r.log.Info("instruction withdrawn by the controller; abandoning it", "instruction", id, "err", err)
		return false, nil
	}
	r.untake(id)
	return false, err
}

// withdrawn drops errors meaning the controller no longer wants the
// instruction (freed or deleted meanwhile); others end the session.
func withdrawn(err error) error {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.NotFound:
		return nil
	}
	return err
}

// enrollReportTries bounds how many sessions' credentials an enrollment's
// report tries (a refused credential: the next registration brings one).
const enrollReportTries = 8

// enrollBMC carries out the controller's in-band BMC enrollment and
// reports its outcome. The controller keeps the previous credential until
// the new one answers, so a failure here loses nothing; it is reported,
// with the credential of whichever session is current by then.
func (r *Runner) enrollBMC(ctx context.Context, c *anvilv1.BMCCredential) {
	msg, err := "", errors.New("this agent cannot enroll BMCs")
	if r.cfg.EnrollBMC != nil {
		msg, err = r.cfg.EnrollBMC(ctx, c)
	}
	if err != nil {
		msg = "in-band BMC enrollment failed: " + err.Error()
	}
	if len(msg) > anvilv1.MaxMessageBytes {
		msg = msg[:anvilv1.MaxMessageBytes]
	}
	for attempt := 0; ; attempt++ {
		err := r.report(ctx, "", anvilv1.EventType_EVENT_TYPE_BMC, msg, nil)
		if status.Code(err) != codes.Unauthenticated || attempt == enrollReportTries-1 {
			if err != nil && ctx.Err() == nil {
				r.log.Warn("reporting the BMC enrollment", "err", err)
			}
			return
		}
		// The session that asked ended; wait for the next registration.
		if r.cfg.Backoff.Sleep(ctx, attempt) != nil {
			return
		}
	}
}

// report sends one event, retrying transient failures with backoff. It
// gives up on statuses that retrying cannot change.
func (r *Runner) report(ctx context.Context, id string, t anvilv1.EventType, msg string, p *anvilv1.Progress) error {
	req := &anvilv1.ReportRequest{InstructionId: id, Type: t, Message: msg, Progress: p}
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		_, err := r.api.Report(cctx, req, r.machineCreds())
		cancel()
		switch status.Code(err) {
		case codes.OK:
			return nil
		case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("report failed; retrying", "err", err, "attempt", attempt)
		if err := r.cfg.Backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// progress forwards executor progress at most once per interval, with the
// average rate since the instruction started.
type progress struct {
	r       *Runner
	id      string
	typ     anvilv1.EventType
	every   time.Duration
	started time.Time
	// withdraw cancels the execution when the controller refuses a
	// progress report because the instruction was cancelled.
	withdraw context.CancelCauseFunc
	mu       sync.Mutex
	last     time.Time
}

var errWithdrawn = errors.New("instruction withdrawn by the controller")

// Note implements Noter.
func (p *progress) Note(msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.r.cfg.CallTimeout)
	defer cancel()
	req := &anvilv1.ReportRequest{InstructionId: p.id, Type: p.typ, Message: msg}
	if _, err := p.r.api.Report(ctx, req, p.r.machineCreds()); err != nil {
		if withdrawn(err) == nil {
			p.withdraw(fmt.Errorf("%w: %v", errWithdrawn, err))
			return
		}
		p.r.log.Warn("milestone report failed; the closing event repeats it", "msg", msg, "err", err)
	}
}

func (p *progress) Update(done, total uint64) {
	p.mu.Lock()
	now := time.Now()
	if now.Sub(p.last) < p.every && done < total {
		p.mu.Unlock()
		return
	}
	p.last = now
	p.mu.Unlock()
	var rate uint64
	if el := now.Sub(p.started).Seconds(); el > 0 {
		rate = uint64(float64(done) / el)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.r.cfg.CallTimeout)
	defer cancel()
	req := &anvilv1.ReportRequest{InstructionId: p.id, Type: p.typ,
		Progress: &anvilv1.Progress{BytesDone: done, BytesTotal: total, RateBytesPerSecond: rate}}
	_, err := p.r.api.Report(ctx, req, p.r.machineCreds())
	switch {
	case err == nil:
	case withdrawn(err) == nil:
		p.withdraw(fmt.Errorf("%w: %v", errWithdrawn, err))
	default:
		p.r.log.Debug("progress report failed (the next one carries on)", "err", err)
	}
}
