// Package harness starts real anvil parts for tests and benchmarks: a
// controller (TLS, SQLite file, gRPC on a loopback port) that can be killed
// and restarted on the same address, operator clients, and simulated
// machines (the real agent runner with generated inventories and recording
// executors).
package harness

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/runner"
	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Controller is a restartable in-process controller.
type Controller struct {
	t    testing.TB
	cfg  app.Config
	log  *slog.Logger
	mu   sync.Mutex
	c    *app.Controller
	caPM []byte
}

// Logger returns a logger writing to the test log when -v, else discarding.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// StartController starts a controller in dir on a free loopback port; edit
// may change the config first.
func StartController(t testing.TB, dir string, edit func(*app.Config)) *Controller {
	t.Helper()
	cfg := app.Defaults()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	h := &Controller{t: t, cfg: cfg, log: Logger(t)}
	h.Start()
	// Later restarts bind the same port.
	h.cfg.Listen = h.c.Addr.String()
	t.Cleanup(func() { h.Stop() })
	return h
}

// Start (re)starts the controller; it fails the test on error.
func (h *Controller) Start() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c != nil {
		return
	}
	var c *app.Controller
	var err error
	for range 50 { // the old socket may linger for a moment after a kill
		if c, err = app.Start(context.Background(), h.cfg, h.log); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatalf("start controller: %v", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		h.t.Fatal(err)
	}
	h.c, h.caPM = c, pem
}

// Stop kills the controller at once (every stream breaks), if running.
func (h *Controller) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c == nil {
		return
	}
	if err := h.c.Stop(); err != nil {
		h.t.Errorf("stop controller: %v", err)
	}
	h.c = nil
}

// Addr is the controller's address.
func (h *Controller) Addr() string { return h.cfg.Listen }

// Running returns the running controller's details.
func (h *Controller) Running() *app.Controller {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.c
}

// CAPEM is the controller's CA certificate.
func (h *Controller) CAPEM() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.caPM
}

// Dial connects with the given bearer token ("" for none).
func (h *Controller) Dial(tok string) *grpc.ClientConn {
	h.t.Helper()
	return DialAt(h.t, h.Addr(), h.CAPEM(), tok)
}

// DialAt connects to the controller at addr, trusting caPEM, with the
// given bearer token ("" for none); closed when the test ends.
func DialAt(t testing.TB, addr string, caPEM []byte, tok string) *grpc.ClientConn {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(caPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(pki.Bearer(tok)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Operator is a set of operator API clients.
type Operator struct {
	Machines anvilv1.MachineServiceClient
	Images   anvilv1.ImageServiceClient
	Sizes    anvilv1.SizeServiceClient
}

// Operator dials the operator API with the admin token.
func (h *Controller) Operator() Operator { return OperatorOf(h.Dial(h.Running().AdminToken)) }

// OperatorOf is the operator API on conn (dialled with an admin token).
func OperatorOf(conn *grpc.ClientConn) Operator {
	return Operator{
		Machines: anvilv1.NewMachineServiceClient(conn),
		Images:   anvilv1.NewImageServiceClient(conn),
		Sizes:    anvilv1.NewSizeServiceClient(conn),
	}
}

// UUID returns a deterministic lower-case UUID for simulated machine i.
func UUID(seed string, i int) string {
	s := sha256.Sum256(fmt.Appendf(nil, "%s/%d", seed, i))
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// Inventory is a plausible inventory of a simulated machine.
func Inventory(uuid string, i int) *anvilv1.Inventory {
	return &anvilv1.Inventory{
		Cpu:    &anvilv1.CPU{Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) Gold 6338", Sockets: 1, Cores: 32, Threads: 64},
		Memory: &anvilv1.Memory{TotalBytes: 256 << 30, UsableBytes: 250 << 30},
		Disks: []*anvilv1.Disk{
			{Name: "nvme0n1", Path: "/dev/nvme0n1", Model: "SAMSUNG MZQL2960HCJR", Serial: fmt.Sprintf("S64FNE0R%06d", i), SizeBytes: 960 << 30, Controller: "nvme", LogicalBlockSize: 512, PhysicalBlockSize: 4096},
		},
		Nics: []*anvilv1.NIC{
			{Name: "eth0", Mac: fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), Driver: "ice", SpeedMbps: 25000, LinkUp: true},
		},
		Product: &anvilv1.Product{Vendor: "Supermicro", Name: "SYS-120U", Uuid: uuid, Serial: fmt.Sprintf("S%08d", i)},
	}
}

// Recorder counts executions per instruction id; it is an Executor that
// succeeds with the given closing event.
type Recorder struct {
	Close anvilv1.EventType
	mu    sync.Mutex
	runs  map[string]int
	order []string
	last  *anvilv1.Instruction
}

// Execute implements runner.Executor.
func (r *Recorder) Execute(_ context.Context, in *anvilv1.Instruction, p runner.Progress) (runner.Outcome, error) {
	r.mu.Lock()
	if r.runs == nil {
		r.runs = make(map[string]int)
	}
	r.runs[in.GetId()]++
	r.order = append(r.order, in.GetId())
	r.last = in
	r.mu.Unlock()
	p.Update(1, 1)
	return runner.Outcome{Type: r.Close, Message: "recorded"}, nil
}

// Runs returns a copy of the per-instruction execution counts and the order.
func (r *Recorder) Runs() (map[string]int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.runs))
	for k, v := range r.runs {
		m[k] = v
	}
	return m, append([]string(nil), r.order...)
}

// Last returns the instruction executed last (nil before the first).
func (r *Recorder) Last() *anvilv1.Instruction {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Agent is one simulated machine: the real runner, with recording executors.
type Agent struct {
	UUID    string
	Runner  *runner.Runner
	Install *Recorder
	Wipe    *Recorder
	cancel  context.CancelFunc
	done    chan error
}

// StartAgent runs a simulated machine against h until the test ends; it
// registers with the controller's shared boot token.
func (h *Controller) StartAgent(t testing.TB, uuid string, i int) *Agent {
	t.Helper()
	return h.StartAgentWithToken(t, uuid, i, h.Running().BootToken)
}

// StartAgentWithToken is StartAgent registering with bootToken (a per-boot
// token from a boot script).
func (h *Controller) StartAgentWithToken(t testing.TB, uuid string, i int, bootToken string) *Agent {
	t.Helper()
	return StartAgentAt(t, h.log, h.Addr(), h.CAPEM(), uuid, i, bootToken)
}

// StartAgentAt runs a simulated machine against the controller(s) at
// controller (an address, or a comma-separated list of replicas), trusting
// caPEM, until the test ends.
func StartAgentAt(t testing.TB, log *slog.Logger, controller string, caPEM []byte, uuid string, i int, bootToken string) *Agent {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(caPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{UUID: uuid, Install: &Recorder{Close: anvilv1.EventType_EVENT_TYPE_BOOTING}, Wipe: &Recorder{Close: anvilv1.EventType_EVENT_TYPE_WIPED}, done: make(chan error, 1)}
	inv := Inventory(uuid, i)
	r, err := runner.New(runner.Config{
		Controller: controller, TLS: tlsCfg, BootToken: bootToken, AgentVersion: "harness",
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil },
		Executors: runner.Executors{Install: a.Install, Wipe: a.Wipe},
		Backoff:   backoff.Policy{Base: 50 * time.Millisecond, Cap: time.Second},
	}, runner.WithLogger(log.With("agent", i)))
	if err != nil {
		t.Fatal(err)
	}
	a.Runner = r
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- r.Run(ctx) }()
	t.Cleanup(a.Stop)
	return a
}

// Stop ends the agent and waits for it.
func (a *Agent) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	<-a.done
	a.cancel = nil
	a.Runner.Close()
}

// Eventually polls cond until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
