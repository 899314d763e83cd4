// Command agentload measures how the controller holds a fleet of waiting
// agents: N simulated agents (each with its own TCP+TLS connection, as real
// machines have) register, then hold a Wait stream. It reports
// registrations/s, register latency p50/p99, controller RSS per waiting agent
// and allocate → instruction-received latency p50/p99.
//
// The same load runs, in the same invocation, against a named baseline: a
// bare gRPC server (same TLS, same interceptor-free transport) whose Register
// returns at once and whose Wait only blocks. The ratios say what anvil's
// logic, store and security cost on top of gRPC itself.
//
//	agentload -controller bin/anvil-controller -agents 1000,10000
//	agentload -serve-baseline ADDR CERT KEY   (internal: the baseline server)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // the baseline serves pprof like the controller
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

func main() {
	if len(os.Args) == 6 && os.Args[1] == "-serve-baseline" {
		go func() { _ = http.ListenAndServe(os.Args[5], nil) }()
		if err := serveBaseline(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "baseline:", err)
			os.Exit(1)
		}
		return
	}
	// The load generator holds 10,000 client connections; its own garbage
	// collection would otherwise stall the simulated agents and show up as
	// server latency. Collect less often (it has memory to spare).
	debug.SetGCPercent(400)
	controller := flag.String("controller", "bin/anvil-controller", "anvil-controller binary")
	counts := flag.String("agents", "1000,10000", "comma-separated fleet sizes")
	conc := flag.Int("concurrency", 32, "connections / registrations in flight")
	samples := flag.Int("alloc-samples", 300, "allocations timed per fleet")
	flag.Parse()
	if err := run(*controller, *counts, *conc, *samples); err != nil {
		fmt.Fprintln(os.Stderr, "agentload:", err)
		os.Exit(1)
	}
}

type result struct {
	n              int
	connPerSec     float64
	regPerSec      float64 // capacity, closed loop
	satP50, satP99 time.Duration
	rate           float64 // offered load of the open loop
	p50, p99       time.Duration
	rssPerAgent    float64 // bytes
	allocP50       time.Duration
	allocP99       time.Duration
}

func run(controllerBin, counts string, conc, samples int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var ns []int
	for _, f := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -agents %q", counts)
		}
		ns = append(ns, n)
	}
	fmt.Printf("agentload: %d CPUs, %s; each agent has its own TLS connection\n", runtime.NumCPU(), runtime.Version())
	for _, n := range ns {
		base, err := fleet(n, conc, 0, func(dir string, port int) (*exec.Cmd, server, error) {
			ca, err := pki.EnsureCA(dir)
			if err != nil {
				return nil, server{}, err
			}
			cert, key, err := ca.EnsureServingCert(dir, nil)
			if err != nil {
				return nil, server{}, err
			}
			debug := freeAddr()
			cmd := exec.Command(self, "-serve-baseline", fmt.Sprintf("127.0.0.1:%d", port), cert, key, debug)
			return cmd, server{caPEM: ca.CertPEM(), boot: "baseline", name: "bare gRPC", debug: debug}, nil
		})
		if err != nil {
			return fmt.Errorf("baseline, %d agents: %w", n, err)
		}
		an, err := fleet(n, conc, samples, func(dir string, port int) (*exec.Cmd, server, error) {
			debug := os.Getenv("AGENTLOAD_DEBUG_ADDR")
			if debug == "" {
				debug = freeAddr()
			}
			cmd := exec.Command(controllerBin, "--data-dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
				"--log-level", "error", "--keepalive-interval", "1h", "--heartbeat-interval", "1h", "--debug-addr", debug)
			return cmd, server{name: "anvil-controller", anvil: true, debug: debug}, nil
		})
		if err != nil {
			return fmt.Errorf("anvil, %d agents: %w", n, err)
		}
		report(base, an, conc)
	}
	return nil
}

func report(base, an result, conc int) {
	fmt.Printf("\n== %d waiting agents (baseline: bare gRPC server, same TLS, measured in this run)\n", an.n)
	fmt.Printf("%-42s %14s %14s %8s   %s\n", "metric", "anvil", "baseline", "ratio", "target")
	row := func(name string, a, b float64, unit string, target string) {
		ratio := "-"
		if b > 0 {
			ratio = fmt.Sprintf("%.2fx", a/b)
		}
		bs := "-"
		if b > 0 {
			bs = fmt.Sprintf("%.1f%s", b, unit)
		}
		fmt.Printf("%-42s %13.1f%s %14s %8s   %s\n", name, a, unit, bs, ratio, target)
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	row("TLS connections/s (agent boot)", an.connPerSec, base.connPerSec, "", "")
	row("registrations/s (capacity, closed loop)", an.regPerSec, base.regPerSec, "", "")
	row(fmt.Sprintf("register p50, saturated (%d in flight)", conc), ms(an.satP50), ms(base.satP50), "", "")
	row(fmt.Sprintf("register p99, saturated (%d in flight)", conc), ms(an.satP99), ms(base.satP99), "", "")
	row("offered load, open loop (reg/s)", an.rate, base.rate, "", "half of capacity")
	row("register p50 at that load (ms)", ms(an.p50), ms(base.p50), "", "")
	row("register p99 at that load (ms)", ms(an.p99), ms(base.p99), "", verdict(ms(an.p99) < 50, "< 50 ms"))
	row("controller RSS per waiting agent (KiB)", an.rssPerAgent/1024, base.rssPerAgent/1024, "", verdict(an.rssPerAgent < 20*1024, "< 20 KiB"))
	row("allocate→received p50 (ms)", ms(an.allocP50), 0, "", "")
	row("allocate→received p99 (ms)", ms(an.allocP99), 0, "", verdict(ms(an.allocP99) < 100, "< 100 ms"))
}

func verdict(ok bool, target string) string {
	if ok {
		return target + " PASS"
	}
	return target + " MISS"
}

type server struct {
	debug string // pprof address
	caPEM []byte
	boot  string
	admin string
	name  string
	anvil bool
}

// fleet starts a server process, connects n agents, and measures.
func fleet(n, conc, samples int, start func(dir string, port int) (*exec.Cmd, server, error)) (result, error) {
	res := result{n: n}
	dir, err := os.MkdirTemp("", "agentload-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd, srv, err := start(dir, port)
	if err != nil {
		return res, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitPort(addr); err != nil {
		return res, err
	}
	if srv.anvil {
		if srv.caPEM, err = os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil {
			return res, err
		}
		if srv.boot, err = pki.ReadTokenFile(filepath.Join(dir, "boot.token")); err != nil {
			return res, err
		}
		if srv.admin, err = pki.ReadTokenFile(filepath.Join(dir, "admin.token")); err != nil {
			return res, err
		}
	}
	tlsCfg, err := pki.ClientTLS(srv.caPEM, "")
	if err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond)
	rss0, err := rss(cmd.Process.Pid)
	if err != nil {
		return res, err
	}

	agents := make([]*simAgent, n)
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	// Phase 1: every agent connects (TCP + TLS handshake), as machines do
	// once per boot. Timed apart so that handshakes do not inflate the
	// Register latency measured next.
	tc := time.Now()
	if err := parallel(n, conc, func(i int) error {
		a, err := connect(addr, tlsCfg)
		agents[i] = a
		return err
	}); err != nil {
		return res, err
	}
	res.connPerSec = float64(n) / time.Since(tc).Seconds()
	// Phase 2: every agent registers.
	if os.Getenv("AGENTLOAD_PROFILE") != "" && srv.anvil {
		go profile(srv.debug, fmt.Sprintf("/tmp/agentload-register-%d.prof", n))
	}
	// 2a, closed loop: the first half registers with conc calls in
	// flight, as fast as the server goes: its capacity. The latency of
	// saturation is mostly queueing (Little's law: conc ÷ throughput).
	half := n / 2
	lat := make([]time.Duration, half)
	t0 := time.Now()
	if err := parallel(half, conc, func(i int) error {
		d, err := agents[i].register(srv.boot, i)
		lat[i] = d
		return err
	}); err != nil {
		return res, err
	}
	elapsed := time.Since(t0)
	res.regPerSec = float64(half) / elapsed.Seconds()
	res.satP50, res.satP99 = percentiles(lat)
	// 2b, open loop: the second half arrives at a fixed rate, half the
	// capacity just measured, one call per arrival however slow the
	// server is; latency counts from the scheduled arrival, so queueing
	// is not hidden (no coordinated omission).
	res.rate = res.regPerSec / 2
	if lat, err = openLoop(agents[half:], half, res.rate, srv.boot); err != nil {
		return res, err
	}
	res.p50, res.p99 = percentiles(lat)
	elapsed = time.Since(t0)
	for _, a := range agents {
		if err := a.wait(); err != nil {
			return res, err
		}
	}
	// Waiting agents wait for hours: measure the steady state, after the
	// garbage of the registration burst is collected (both servers serve
	// pprof; heap?gc=1 runs a collection) and stacks have shrunk.
	for range 3 {
		if err := gc(srv.debug); err != nil {
			return res, err
		}
		time.Sleep(time.Second)
	}
	if stats, err := memStats(srv.debug); err == nil {
		fmt.Printf("%s after GC: %s\n", srv.name, stats)
	}
	rss1, err := rss(cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	res.rssPerAgent = float64(rss1-rss0) / float64(n)
	fmt.Printf("%s: %d agents registered in %v and waiting; RSS %d → %d MiB\n", srv.name, n, elapsed.Round(time.Millisecond), rss0>>20, rss1>>20)
	if srv.anvil && samples > 0 {
		res.allocP50, res.allocP99, err = allocations(addr, tlsCfg, srv.admin, agents, samples)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// gc makes the server collect garbage through its pprof endpoint.
func gc(debugAddr string) error {
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		return fmt.Errorf("trigger GC: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return errors.Join(err, resp.Body.Close())
}

// memStats returns the server's stack and heap in use (from pprof's heap
// page), to split RSS per agent into goroutine stacks and heap.
func memStats(debugAddr string) (string, error) {
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/heap?debug=1")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"# HeapInuse = ", "# Stack = ", "# HeapIdle = ", "# HeapReleased = "} {
			if strings.HasPrefix(line, k) {
				v, _ := strconv.ParseInt(strings.Fields(strings.TrimPrefix(line, k))[0], 10, 64)
				out = append(out, fmt.Sprintf("%s%d MiB", strings.TrimPrefix(k, "# "), v>>20))
			}
		}
	}
	return strings.Join(out, ", "), nil
}

// profile saves a 5 s CPU profile of the controller (run with --debug-addr).
func profile(addr, file string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=5")
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
}

// freeAddr returns a free loopback address.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitPort(addr string) error {
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start listening", addr)
}

// rss reads VmRSS of pid in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

type simAgent struct {
	id     string
	conn   *grpc.ClientConn
	api    anvilv1.AgentServiceClient
	stream anvilv1.AgentService_WaitClient
	cancel context.CancelFunc
	got    chan time.Time
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}

// openLoop registers agents (numbered from first) at rate per second,
// each at its scheduled time; it returns each call's latency counted from
// that time.
func openLoop(agents []*simAgent, first int, rate float64, boot string) ([]time.Duration, error) {
	lat := make([]time.Duration, len(agents))
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	start := time.Now()
	for k, a := range agents {
		at := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		time.Sleep(time.Until(at))
		wg.Go(func() {
			_, err := a.register(boot, first+k)
			lat[k], errs[k] = time.Since(at), err
		})
	}
	wg.Wait()
	return lat, errors.Join(errs...)
}

// parallel runs fn(0..n-1) with conc calls in flight; the first error wins.
func parallel(n, conc int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errc <- fmt.Errorf("agent %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// connect opens an agent's own connection and waits until it is READY.
func connect(addr string, tlsCfg *tls.Config) (*simAgent, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, err
	}
	a := &simAgent{conn: conn, api: anvilv1.NewAgentServiceClient(conn), got: make(chan time.Time, 1), cancel: func() {}}
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			return a, fmt.Errorf("connect: %w", ctx.Err())
		}
	}
	return a, nil
}

// register times Register alone, then opens the Wait stream.
func (a *simAgent) register(boot string, i int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := time.Now()
	resp, err := a.api.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(harness.UUID("agentload", i), i), AgentVersion: "agentload"}, grpc.PerRPCCredentials(bearer(boot)))
	d := time.Since(t)
	if err != nil {
		return 0, err
	}
	a.id = resp.GetMachineId()
	sctx, scancel := context.WithCancel(context.Background())
	a.cancel = scancel
	a.stream, err = a.api.Wait(sctx, &anvilv1.WaitRequest{}, grpc.PerRPCCredentials(bearer(resp.GetCredential())))
	return d, err
}

// wait blocks until the server has accepted the Wait stream (headers), then
// reads instructions in the background.
func (a *simAgent) wait() error {
	if _, err := a.stream.Header(); err != nil {
		return fmt.Errorf("wait stream: %w", err)
	}
	go func() {
		for {
			in, err := a.stream.Recv()
			if err != nil {
				return
			}
			if in.GetInstall() != nil {
				select {
				case a.got <- time.Now():
				default:
				}
			}
		}
	}()
	return nil
}

func (a *simAgent) close() {
	if a == nil {
		return
	}
	a.cancel()
	a.conn.Close()
}

// allocations times AllocateMachine → the agent receiving the Install.
func allocations(addr string, tlsCfg *tls.Config, admin string, agents []*simAgent, samples int) (time.Duration, time.Duration, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithPerRPCCredentials(bearer(admin)))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	ctx := context.Background()
	if _, err := anvilv1.NewImageServiceClient(conn).CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "bench", Url: "http://images.example/bench.raw", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + strings.Repeat("ab", 32), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		return 0, 0, err
	}
	mc := anvilv1.NewMachineServiceClient(conn)
	samples = min(samples, len(agents))
	step := len(agents) / samples
	var lat []time.Duration
	for k := range samples {
		a := agents[k*step]
		t := time.Now()
		if _, err := mc.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.id, ImageId: "bench"}); err != nil {
			return 0, 0, fmt.Errorf("allocate %s: %w", a.id, err)
		}
		select {
		case got := <-a.got:
			lat = append(lat, got.Sub(t))
		case <-time.After(10 * time.Second):
			return 0, 0, fmt.Errorf("agent %s never received its install", a.id)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// baseline is a bare AgentService: Register answers at once, Wait only
// sends headers and blocks. It is the transport floor anvil is compared to.
type baseline struct {
	anvilv1.UnimplementedAgentServiceServer
	n atomic.Int64
}

func (b *baseline) Register(context.Context, *anvilv1.RegisterRequest) (*anvilv1.RegisterResponse, error) {
	return &anvilv1.RegisterResponse{MachineId: strconv.FormatInt(b.n.Add(1), 10), Credential: "baseline"}, nil
}

func (b *baseline) Wait(_ *anvilv1.WaitRequest, s anvilv1.AgentService_WaitServer) error {
	if err := s.SendHeader(nil); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func serveBaseline(addr, cert, key string) error {
	tlsCfg, err := pki.LoadServerTLS(cert, key)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(4<<10), grpc.WriteBufferSize(4<<10))
	anvilv1.RegisterAgentServiceServer(g, &baseline{})
	slog.Info("baseline serving", "addr", addr)
	return g.Serve(l)
}
