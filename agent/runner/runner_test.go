package runner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// script is an AgentService whose behaviour each test programs: the
// instructions every Wait stream sends, and Report's answers.
type script struct {
	anvilv1.UnimplementedAgentServiceServer
	mu       sync.Mutex
	streams  int
	perWait  func(n int) []*anvilv1.Instruction // instructions for the n-th stream
	endWait  func(n int) bool                   // end the n-th stream after sending
	onReport func(r *anvilv1.ReportRequest) error
	reports  []*anvilv1.ReportRequest
	regs     int
	// regTokens are the bearer tokens Register was called with; refuse
	// answers Unauthenticated to the tokens it names.
	regTokens []string
	refuse    func(tok string) bool
	// waitUnauth ends the n-th Wait stream at once with Unauthenticated.
	waitUnauth func(n int) bool
	// enroll, when set, is the BMC enrollment the n-th registration's
	// answer carries.
	enroll func(n int) *anvilv1.BMCCredential
}

func (s *script) Register(ctx context.Context, _ *anvilv1.RegisterRequest) (*anvilv1.RegisterResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	tok := strings.TrimPrefix(strings.Join(md.Get("authorization"), ""), "Bearer ")
	s.regTokens = append(s.regTokens, tok)
	if s.refuse != nil && s.refuse(tok) {
		return nil, status.Error(codes.Unauthenticated, "unknown credential")
	}
	s.regs++
	resp := &anvilv1.RegisterResponse{MachineId: "m1", Credential: fmt.Sprintf("cred-%d", s.regs)}
	if s.enroll != nil {
		resp.BmcEnrollment = s.enroll(s.regs)
	}
	return resp, nil
}

func (s *script) Wait(_ *anvilv1.WaitRequest, st anvilv1.AgentService_WaitServer) error {
	s.mu.Lock()
	s.streams++
	n := s.streams
	unauth := s.waitUnauth != nil && s.waitUnauth(n)
	s.mu.Unlock()
	if unauth {
		return status.Error(codes.Unauthenticated, "credential superseded")
	}
	for _, in := range s.perWait(n) {
		if err := st.Send(in); err != nil {
			return err
		}
	}
	if s.endWait != nil && s.endWait(n) {
		return status.Error(codes.Unavailable, "stream cut by the test")
	}
	<-st.Context().Done()
	return nil
}

func (s *script) Report(_ context.Context, r *anvilv1.ReportRequest) (*anvilv1.ReportResponse, error) {
	if s.onReport != nil {
		if err := s.onReport(r); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, r)
	return &anvilv1.ReportResponse{}, nil
}

func (s *script) Heartbeat(context.Context, *anvilv1.HeartbeatRequest) (*anvilv1.HeartbeatResponse, error) {
	return &anvilv1.HeartbeatResponse{}, nil
}

func (s *script) got() []*anvilv1.ReportRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*anvilv1.ReportRequest(nil), s.reports...)
}

// serve runs s over TLS on a loopback port and returns the client TLS config.
func serve(t *testing.T, s *script) (string, *tls.Config) {
	t.Helper()
	ca, err := pki.EnsureCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := replica(t, ca, "127.0.0.1", s)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	return addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

type counter struct {
	mu   sync.Mutex
	runs map[string]int
	fn   func(ctx context.Context, p Progress) (Outcome, error)
}

func (c *counter) Execute(ctx context.Context, in *anvilv1.Instruction, p Progress) (Outcome, error) {
	c.mu.Lock()
	if c.runs == nil {
		c.runs = map[string]int{}
	}
	c.runs[in.GetId()]++
	c.mu.Unlock()
	if c.fn != nil {
		return c.fn(ctx, p)
	}
	return Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Message: "done"}, nil
}

func (c *counter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

func start(t *testing.T, s *script, ex Executors, opts ...func(*Config)) *Runner {
	t.Helper()
	addr, tlsCfg := serve(t, s)
	cfg := Config{
		Controller: addr, TLS: tlsCfg, BootToken: "boot",
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return &anvilv1.Inventory{}, nil },
		Executors: ex,
		Backoff:   backoff.Policy{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond},
	}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := New(cfg, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; r.Close() })
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func wipe(id string) *anvilv1.Instruction {
	return &anvilv1.Instruction{Id: id, Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_QUICK}}}
}

// The same instruction re-sent on one stream and on every new stream (as
// the controller does until it sees the ack) is executed once.
func TestDuplicateDeliveryExecutesOnce(t *testing.T) {
	s := &script{
		perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-1"), wipe("in-1")} },
		endWait: func(n int) bool { return n < 4 },
	}
	slow := &counter{fn: func(context.Context, Progress) (Outcome, error) {
		time.Sleep(100 * time.Millisecond) // stay busy while copies arrive
		return Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED}, nil
	}}
	start(t, s, Executors{Wipe: slow})
	eventually(t, "4 streams", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.streams >= 4 })
	eventually(t, "closing report", func() bool { return len(s.got()) >= 2 })
	time.Sleep(200 * time.Millisecond)
	if n := slow.count("in-1"); n != 1 {
		t.Fatalf("instruction executed %d times, want 1", n)
	}
	var types []anvilv1.EventType
	for _, r := range s.got() {
		types = append(types, r.GetType())
	}
	if len(types) != 2 || types[0] != anvilv1.EventType_EVENT_TYPE_WIPING || types[1] != anvilv1.EventType_EVENT_TYPE_WIPED {
		t.Fatalf("reports %v, want [WIPING WIPED]", types)
	}
}

// Nothing is executed before the controller has the acknowledgement, and
// an ack that failed transiently is retried, not dropped.
func TestAckBeforeExecute(t *testing.T) {
	var mu sync.Mutex
	fails := 3
	s := &script{perWait: func(n int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-7")} }}
	c := &counter{}
	s.onReport = func(r *anvilv1.ReportRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if r.GetType() == anvilv1.EventType_EVENT_TYPE_WIPING && fails > 0 {
			fails--
			if c.count("in-7") != 0 {
				t.Error("executed before the acknowledgement reached the controller")
			}
			return status.Error(codes.Unavailable, "controller restarting")
		}
		return nil
	}
	start(t, s, Executors{Wipe: c})
	eventually(t, "execution", func() bool { return c.count("in-7") == 1 })
	eventually(t, "WIPED report", func() bool {
		g := s.got()
		return len(g) == 2 && g[1].GetType() == anvilv1.EventType_EVENT_TYPE_WIPED
	})
}

// A withdrawn instruction (ack refused with FailedPrecondition) is never
// executed.
func TestWithdrawnInstructionIsNotExecuted(t *testing.T) {
	s := &script{
		perWait:  func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-x"), wipe("in-y")} },
		onReport: func(r *anvilv1.ReportRequest) error { return cancelledIf(r, "in-x") },
	}
	c := &counter{}
	start(t, s, Executors{Wipe: c})
	eventually(t, "in-y executed", func() bool { return c.count("in-y") == 1 })
	if c.count("in-x") != 0 {
		t.Fatal("withdrawn instruction was executed")
	}
}

func cancelledIf(r *anvilv1.ReportRequest, id string) error {
	if r.GetInstructionId() == id {
		return status.Error(codes.FailedPrecondition, "cancelled")
	}
	return nil
}

// An instruction kind without an executor fails with a clear reason, once.
func TestMissingExecutorReportsFailure(t *testing.T) {
	install := &anvilv1.Instruction{Id: "in-i", Kind: &anvilv1.Instruction_Install{Install: &anvilv1.Install{}}}
	s := &script{perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{install} }}
	start(t, s, Executors{})
	eventually(t, "FAILED report", func() bool { return len(s.got()) == 1 })
	r := s.got()[0]
	if r.GetType() != anvilv1.EventType_EVENT_TYPE_FAILED || r.GetInstructionId() != "in-i" || !strings.Contains(r.GetMessage(), "no executor") {
		t.Fatalf("report %v, want FAILED naming the missing executor", r)
	}
}

// An executor error becomes a FAILED report carrying the error.
func TestExecutorErrorIsReported(t *testing.T) {
	s := &script{perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-e")} }}
	c := &counter{fn: func(context.Context, Progress) (Outcome, error) {
		return Outcome{}, errors.New("disk /dev/sdb: verify failed")
	}}
	start(t, s, Executors{Wipe: c})
	eventually(t, "FAILED report", func() bool { return len(s.got()) == 2 })
	r := s.got()[1]
	if r.GetType() != anvilv1.EventType_EVENT_TYPE_FAILED || !strings.Contains(r.GetMessage(), "verify failed") {
		t.Fatalf("report %v, want FAILED with the executor's error", r)
	}
}

// A progress report refused because the instruction was cancelled stops
// the running executor, and what would follow it (kexec, reboot) never runs.
func TestWithdrawalStopsRunningExecutor(t *testing.T) {
	s := &script{perWait: func(int) []*anvilv1.Instruction { return []*anvilv1.Instruction{wipe("in-w")} }}
	s.onReport = func(r *anvilv1.ReportRequest) error {
		if r.GetProgress() != nil {
			return status.Error(codes.FailedPrecondition, "cancelled: machine freed")
		}
		return nil
	}
	thenRan := make(chan struct{}, 1)
	stopped := make(chan struct{})
	c := &counter{fn: func(ctx context.Context, p Progress) (Outcome, error) {
		p.Update(1, 10)
		select {
		case <-ctx.Done():
			close(stopped)
			return Outcome{}, ctx.Err()
		case <-time.After(5 * time.Second):
			return Outcome{Type: anvilv1.EventType_EVENT_TYPE_WIPED, Then: func(context.Context) error { thenRan <- struct{}{}; return nil }}, nil
		}
	}}
	start(t, s, Executors{Wipe: c})
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("executor kept running after the controller withdrew the instruction")
	}
	time.Sleep(100 * time.Millisecond)
	if len(thenRan) != 0 {
		t.Fatal("the follow-up action ran for a withdrawn instruction")
	}
}

// Then runs only after the closing event was acknowledged, and ErrRestart
// re-registers.
func TestThenRunsAfterReportAndRestartReregisters(t *testing.T) {
	reboot := &anvilv1.Instruction{Id: "in-r", Kind: &anvilv1.Instruction_Reboot{Reboot: &anvilv1.Reboot{}}}
	s := &script{perWait: func(n int) []*anvilv1.Instruction {
		if n == 1 {
			return []*anvilv1.Instruction{reboot}
		}
		return nil
	}}
	var reportsAtThen int
	c := &counter{}
	c.fn = func(context.Context, Progress) (Outcome, error) {
		return Outcome{Type: anvilv1.EventType_EVENT_TYPE_WAITING, Message: "rebooting", Then: func(context.Context) error {
			reportsAtThen = len(s.got())
			return ErrRestart
		}}, nil
	}
	start(t, s, Executors{Reboot: c})
	eventually(t, "re-registration", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.regs >= 2 })
	if reportsAtThen != 2 {
		t.Fatalf("Then ran with %d reports acknowledged, want 2 (ack and closing event)", reportsAtThen)
	}
}

// A new session registers with the credential it holds; a credential the
// controller no longer knows makes it fall back to the boot token.
func TestReregistersWithItsCredential(t *testing.T) {
	s := &script{perWait: func(int) []*anvilv1.Instruction { return nil }, waitUnauth: func(n int) bool { return n <= 2 }}
	s.refuse = func(tok string) bool { return tok == "cred-2" }
	start(t, s, Executors{})
	eventually(t, "three registrations", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.regs >= 3
	})
	s.mu.Lock()
	got := strings.Join(s.regTokens, " ")
	s.mu.Unlock()
	// boot → cred-1 (the stream was cut) → cred-2 refused → boot again.
	if !strings.HasPrefix(got, "boot cred-1 cred-2 boot") {
		t.Fatalf("register tokens %q, want boot, its credential, then boot after a refusal", got)
	}
}

// Sessions that end at once back off: an agent whose credential keeps
// being superseded (two boards with one UUID) does not spin.
func TestShortSessionsBackOff(t *testing.T) {
	s := &script{perWait: func(int) []*anvilv1.Instruction { return nil }, waitUnauth: func(int) bool { return true }}
	start(t, s, Executors{})
	time.Sleep(time.Second)
	s.mu.Lock()
	n := s.regs
	s.mu.Unlock()
	// Backoff capped at 50 ms: at most ~20 a second plus the first two;
	// without it, hundreds.
	if n < 3 || n > 60 {
		t.Fatalf("%d registrations in a second of sessions that end at once, want 3..60", n)
	}
}

// The BMC enrollment a registration's answer asks for is carried out once
// (not again on later registrations that do not ask) and its outcome is
// reported as a BMC event; a failure is reported as such.
func TestBMCEnrollmentIsCarriedOutAndReported(t *testing.T) {
	cred := &anvilv1.BMCCredential{User: "anvil", Password: "Pw0123456789abcd"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"success", nil, "BMC user anvil (ID 3) set"},
		{"failure", errors.New("no free slot"), "in-band BMC enrollment failed: no free slot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &script{perWait: func(int) []*anvilv1.Instruction { return nil }, waitUnauth: func(n int) bool { return n < 2 },
				enroll: func(n int) *anvilv1.BMCCredential {
					if n == 1 {
						return cred
					}
					return nil
				}}
			var mu sync.Mutex
			var got []*anvilv1.BMCCredential
			start(t, s, Executors{}, func(c *Config) {
				c.EnrollBMC = func(_ context.Context, c *anvilv1.BMCCredential) (string, error) {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, c)
					return "BMC user anvil (ID 3) set", tc.err
				}
			})
			eventually(t, "the BMC report", func() bool { return len(s.got()) >= 1 })
			eventually(t, "a second session", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.streams >= 2 })
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0].GetPassword() != cred.GetPassword() {
				t.Errorf("enrollments carried out: %v, want the one asked for, once", got)
			}
			r := s.got()[0]
			if r.GetType() != anvilv1.EventType_EVENT_TYPE_BMC || r.GetMessage() != tc.want || r.GetInstructionId() != "" {
				t.Errorf("report %v, want a BMC event %q", r, tc.want)
			}
		})
	}
}
