// Command agentload measures how the controller holds a fleet of waiting
// agents, against a bare gRPC server under the same conditions. N simulated
// agents (each with its own TCP+TLS connection from its own loopback
// address, as real machines have) connect, register with a real server's
// inventory (24 disks, 8 NICs with LLDP neighbours, 120 PCI devices: the
// same bytes to both servers), hold a Wait stream and send a Heartbeat at
// the interval the server tells them.
//
// Fairness: both servers run on the server CPUs (taskset, GOMAXPROCS =
// their count, the same GOGC/GOMEMLIMIT), the load generator on the others
// (make bench runs it under taskset -c 1); both use the production
// heartbeat (10 s) and Wait keepalive (30 s) intervals, and the
// controller's gRPC transport options; both are offered the same
// registration rate (an open loop, -rate) after their capacity is measured
// apart (a closed loop); both report their own handling time through the
// same stats handler (ops.RPCLatency, scraped from /metrics); RSS is read
// after POST /debug/free-os-memory and a settle. Every measurement is
// repeated -runs times, the two servers taking turns; medians and ranges
// are printed with the targets' PASS/FAIL.
//
// With -replicas N -postgres it also starts one PostgreSQL and N
// controllers on it (agents spread over them), compares their registration
// capacity with the single SQLite controller, and times the failover after
// kill -9 of one replica (with N=1, the replica is restarted).
//
//	taskset -c 1 agentload -controller bin/anvil-controller -agents 10000
//	agentload serve-baseline ...   (internal: the baseline server)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

type config struct {
	self, controller     string
	conc, samples, runs  int
	rate, closedShare    float64
	heartbeat, keepalive time.Duration
	steady, settle       time.Duration
	gogc, gomemlimit     string
	serverCPUs           string
	buffers, replicas    int
	postgres             bool
	servers              map[string]bool // "bare", "anvil": which single servers run
	profile              string          // directory for the servers' CPU, heap and goroutine profiles
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-baseline" {
		if err := serveBaseline(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "baseline:", err)
			os.Exit(1)
		}
		return
	}
	// The load generator holds thousands of client connections; its own
	// garbage collection would otherwise stall the simulated agents and
	// show up as server latency. Collect less often.
	debug.SetGCPercent(400)
	var cfg config
	flag.StringVar(&cfg.controller, "controller", "bin/anvil-controller", "anvil-controller binary")
	counts := flag.String("agents", "1000,10000", "comma-separated fleet sizes")
	flag.IntVar(&cfg.runs, "runs", 5, "runs per fleet size and server (median and range are reported)")
	flag.IntVar(&cfg.conc, "concurrency", 32, "connections / registrations in flight in the closed loops")
	flag.Float64Var(&cfg.closedShare, "closed-share", 0.2, "share of the agents that register in the closed loop (capacity); the rest arrive at -rate")
	flag.Float64Var(&cfg.rate, "rate", 100, "registrations/s offered to both servers in the open loop (must be below both capacities)")
	flag.IntVar(&cfg.samples, "alloc-samples", 300, "allocations timed per fleet")
	flag.DurationVar(&cfg.heartbeat, "heartbeat", 10*time.Second, "heartbeat interval both servers tell the agents (the controller's default)")
	flag.DurationVar(&cfg.keepalive, "keepalive", 30*time.Second, "Wait keepalive interval of both servers (the controller's default)")
	flag.DurationVar(&cfg.steady, "steady", 10*time.Second, "time every agent waits (heartbeats, keepalives) before RSS is read")
	flag.DurationVar(&cfg.settle, "settle", 2*time.Second, "pause after /debug/free-os-memory before RSS is read")
	flag.StringVar(&cfg.gogc, "gogc", "100", "GOGC of both servers (empty: inherited)")
	flag.StringVar(&cfg.gomemlimit, "gomemlimit", "", "GOMEMLIMIT of both servers (empty: inherited)")
	flag.StringVar(&cfg.serverCPUs, "server-cpus", "0", "CPUs of the servers under test (taskset -c); GOMAXPROCS is their count")
	flag.IntVar(&cfg.buffers, "baseline-buffers", 4<<10, "the baseline's gRPC read and write buffers (the controller's: 4 KiB; 0: none)")
	flag.IntVar(&cfg.replicas, "replicas", 0, "also run this many controllers on one PostgreSQL (with -postgres) and time a failover")
	flag.BoolVar(&cfg.postgres, "postgres", false, "start PostgreSQL for -replicas (pgtest: initdb and pg_ctl as nobody)")
	servers := flag.String("servers", "bare,anvil,floor", "single servers to measure (bare, anvil, floor: bare + SQLite); the targets need bare and anvil")
	flag.StringVar(&cfg.profile, "profile", "", "write each server process's CPU profile of the open loop, heap and goroutine profiles at steady state here")
	flag.Parse()
	cfg.servers = map[string]bool{}
	for _, s := range strings.Split(*servers, ",") {
		switch s = strings.TrimSpace(s); s {
		case "bare", "anvil", "floor":
			cfg.servers[s] = true
		case "":
		default:
			fmt.Fprintf(os.Stderr, "agentload: -servers: unknown server %q (want bare, anvil, floor)\n", s)
			os.Exit(2)
		}
	}
	var err error
	if cfg.profile != "" {
		err = os.MkdirAll(cfg.profile, 0o755)
	}
	if err == nil {
		cfg.self, err = os.Executable()
	}
	if err == nil {
		err = run(cfg, *counts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentload:", err)
		os.Exit(1)
	}
}

// result is one run of one server at one fleet size.
type result struct {
	connPerSec, capacity float64
	satP50, satP99       float64 // ms, closed loop
	p50, p99             float64 // ms, open loop, from the scheduled arrival
	srvP50, srvP99       float64 // ms, server-side Register in the open loop
	hbSrvP99             float64 // ms, server-side Heartbeat
	rssPerAgent, rssMiB  float64 // KiB per agent, MiB total after
	allocP50, allocP99   float64 // ms; same replica
	crossP50, crossP99   float64 // ms; allocation on replica 0, agent on another
	allocMissed          float64
	hbOK, hbErr          float64
	failAffected         float64
	failBack             float64
	failP50, failP99     float64 // ms, kill -9 → Wait stream open again
}

func run(cfg config, counts string) error {
	var ns []int
	for _, f := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -agents %q", counts)
		}
		ns = append(ns, n)
	}
	if cfg.replicas > 0 && !cfg.postgres {
		return fmt.Errorf("-replicas needs -postgres")
	}
	reqBytes, _ := proto.Marshal(&anvilv1.RegisterRequest{Inventory: inventory(harness.UUID("agentload", 0), 0), AgentVersion: "agentload"})
	server, err := parseCPUs(cfg.serverCPUs)
	if err != nil {
		return fmt.Errorf("-server-cpus: %w", err)
	}
	fmt.Printf("agentload: %s; servers on CPUs %s (GOMAXPROCS=%d, GOGC=%s, GOMEMLIMIT=%s); load generator on CPUs %s\n",
		runtime.Version(), cfg.serverCPUs, cpuCount(cfg.serverCPUs), orDefault(cfg.gogc, "inherited"), orDefault(cfg.gomemlimit, "inherited"), selfCPUs())
	fmt.Printf("heartbeat %v, Wait keepalive %v; Register request %d bytes (%d disks, %d NICs, %d PCI devices); open loop at %.0f reg/s; %d runs\n",
		cfg.heartbeat, cfg.keepalive, len(reqBytes), invDisks, invNICs, invPCI, cfg.rate, cfg.runs)
	var self unix.CPUSet
	if err := unix.SchedGetaffinity(0, &self); err != nil {
		return fmt.Errorf("read the load generator's CPUs: %w", err)
	}
	if overlap(self, server) {
		fmt.Println("WARNING: the load generator shares the servers' CPUs; run it under taskset -c 1 (make bench does)")
	}
	var pg *postgres
	if cfg.postgres {
		var err error
		if pg, err = startPostgres(cfg.serverCPUs); err != nil {
			return err
		}
		defer func() {
			if err := pg.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
			}
		}()
	}
	for _, n := range ns {
		var base, an, rep, floor []result
		for r := range cfg.runs {
			var starts []func() error
			if cfg.servers["bare"] {
				starts = append(starts, func() error {
					res, err := measure(cfg, n, func() (*deployment, error) { return startBaseline(cfg, false) })
					base = append(base, res)
					return err
				})
			}
			if cfg.servers["anvil"] {
				starts = append(starts, func() error {
					res, err := measure(cfg, n, func() (*deployment, error) { return startAnvil(cfg, "", 1) })
					an = append(an, res)
					return err
				})
			}
			if r%2 == 1 && len(starts) == 2 { // take turns: neither always runs on a warmer machine
				starts[0], starts[1] = starts[1], starts[0]
			}
			if cfg.servers["floor"] {
				starts = append(starts, func() error {
					res, err := measure(cfg, n, func() (*deployment, error) { return startBaseline(cfg, true) })
					floor = append(floor, res)
					return err
				})
			}
			if cfg.replicas > 0 {
				starts = append(starts, func() error {
					url, err := pg.newDatabase()
					if err != nil {
						return err
					}
					res, err := measure(cfg, n, func() (*deployment, error) { return startAnvil(cfg, url, cfg.replicas) })
					rep = append(rep, res)
					return err
				})
			}
			for _, start := range starts {
				if err := start(); err != nil {
					return fmt.Errorf("%d agents, run %d: %w", n, r+1, err)
				}
			}
		}
		report(cfg, n, base, an, rep, floor)
	}
	return nil
}

// overlap reports whether two CPU sets share a CPU.
func overlap(a, b unix.CPUSet) bool {
	for c := range 1024 {
		if a.IsSet(c) && b.IsSet(c) {
			return true
		}
	}
	return false
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// selfCPUs is this process's CPU list (Cpus_allowed_list).
func selfCPUs() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

const (
	registerMethod  = "/anvil.v1.AgentService/Register"
	heartbeatMethod = "/anvil.v1.AgentService/Heartbeat"
)

// measure starts a deployment, runs the fleet against it and stops it.
func measure(cfg config, n int, start func() (*deployment, error)) (result, error) {
	d, err := start()
	if err != nil {
		return result{}, err
	}
	defer d.stop()
	res, err := fleet(cfg, n, d)
	if err != nil {
		return res, fmt.Errorf("%s: %w", d.name, err)
	}
	return res, nil
}

// fleet connects n agents to d and measures.
func fleet(cfg config, n int, d *deployment) (result, error) {
	nan := math.NaN()
	res := result{allocP50: nan, allocP99: nan, crossP50: nan, crossP99: nan, allocMissed: nan,
		failAffected: nan, failBack: nan, failP50: nan, failP99: nan}
	tlsCfg, err := pki.ClientTLS(d.caPEM, "")
	if err != nil {
		return res, err
	}
	rss0, err := settledRSS(cfg, d)
	if err != nil {
		return res, err
	}
	cnt := &counters{}
	agents := make([]*simAgent, n)
	for i := range agents {
		agents[i] = newAgent(i, d.addrs(), tlsCfg, cnt)
	}
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	// Connect: TCP + TLS, as machines do once per boot; timed apart so
	// that handshakes do not inflate the Register latency.
	tc := time.Now()
	if err := parallel(n, cfg.conc, func(i int) error { return agents[i].connect() }); err != nil {
		return res, err
	}
	res.connPerSec = float64(n) / time.Since(tc).Seconds()
	// Capacity, closed loop: the first share registers with conc calls in
	// flight, as fast as the server goes. Its latency is mostly queueing.
	closed := max(1, int(float64(n)*cfg.closedShare))
	lat := make([]time.Duration, closed)
	t0 := time.Now()
	if err := parallel(closed, cfg.conc, func(i int) error {
		var err error
		if lat[i], err = agents[i].register(d.boot); err == nil {
			err = agents[i].wait()
		}
		return err
	}); err != nil {
		return res, err
	}
	res.capacity = float64(closed) / time.Since(t0).Seconds()
	res.satP50, res.satP99 = percentiles(lat)
	// Latency at the offered rate, open loop: each arrival at its
	// scheduled time, however slow the server; latency counts from that
	// time (no coordinated omission). The server's own view comes from
	// its stats handler, the difference of two scrapes.
	before, err := scrape(d, registerMethod)
	if err != nil {
		return res, err
	}
	openFor := time.Duration(float64(n-closed) / cfg.rate * float64(time.Second))
	profiled := d.profile(cfg.profile, fmt.Sprintf("%d-cpu.pprof", n), fmt.Sprintf("profile?seconds=%d", max(1, int(openFor.Seconds())-1)))
	allocs := d.profile(cfg.profile, fmt.Sprintf("%d-allocs.pprof", n), fmt.Sprintf("allocs?seconds=%d", max(1, int(openFor.Seconds())-1)))
	if lat, err = openLoop(agents[closed:], cfg.rate, d.boot); err != nil {
		return res, err
	}
	if err := errors.Join(<-profiled, <-allocs); err != nil {
		return res, err
	}
	if cfg.profile != "" {
		if err := writeLatencies(filepath.Join(cfg.profile, fmt.Sprintf("%s-%d-register.txt", strings.ReplaceAll(d.name, " ", ""), n)), cfg.rate, lat); err != nil {
			return res, err
		}
	}
	res.p50, res.p99 = percentiles(lat)
	after, err := scrape(d, registerMethod)
	if err != nil {
		return res, err
	}
	open := after.sub(before)
	res.srvP50, res.srvP99 = open.quantile(0.5)*1e3, open.quantile(0.99)*1e3
	for _, a := range agents[closed:] {
		if err := a.wait(); err != nil {
			return res, err
		}
	}
	// Steady state: every agent waits, heartbeats and keepalives run.
	time.Sleep(cfg.steady)
	rss1, err := settledRSS(cfg, d)
	if err != nil {
		return res, err
	}
	res.rssPerAgent, res.rssMiB = float64(rss1-rss0)/float64(n)/1024, float64(rss1)/(1<<20)
	for name, what := range map[string]string{"heap.pprof": "heap?gc=1", "heap.txt": "heap?debug=1", "goroutine.pprof": "goroutine"} {
		if err := <-d.profile(cfg.profile, fmt.Sprintf("%d-%s", n, name), what); err != nil {
			return res, err
		}
	}
	hb, err := scrape(d, heartbeatMethod)
	if err != nil {
		return res, err
	}
	res.hbSrvP99 = hb.quantile(0.99) * 1e3
	res.hbOK, res.hbErr = float64(cnt.hbOK.Load()), float64(cnt.hbErr.Load())
	fmt.Printf("  %-28s %6d agents: capacity %6.0f reg/s; open loop p99 %6.1f ms (server %5.1f ms); RSS %4.0f → %4.0f MiB; %d heartbeats (%d failed)\n",
		d.name, n, res.capacity, res.p99, res.srvP99, float64(rss0)/(1<<20), res.rssMiB, cnt.hbOK.Load(), cnt.hbErr.Load())
	if d.anvil && cfg.samples > 0 {
		if err := allocations(d, tlsCfg, agents, cfg.samples, &res); err != nil {
			return res, err
		}
	}
	if d.replicas {
		if err := failover(d, agents, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// settledRSS returns freed memory to the OS on every server process,
// waits, and sums their RSS.
func settledRSS(cfg config, d *deployment) (int64, error) {
	for _, p := range d.procs {
		if err := p.freeOSMemory(); err != nil {
			return 0, err
		}
	}
	time.Sleep(cfg.settle)
	var sum int64
	for _, p := range d.procs {
		r, err := p.rss()
		if err != nil {
			return 0, err
		}
		sum += r
	}
	return sum, nil
}

// scrape sums method's RPCLatency histogram over d's processes.
func scrape(d *deployment, method string) (histogram, error) {
	h := histogram{}
	for _, p := range d.procs {
		ph, err := p.histogram(method)
		if err != nil {
			return nil, err
		}
		h.add(ph)
	}
	return h, nil
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return math.NaN(), math.NaN()
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / 1e6, float64(s[len(s)*99/100]) / 1e6
}

// openLoop registers agents at rate per second, each at its scheduled
// time; it returns each call's latency counted from that time.
//
// The load generator's own garbage collection is held off meanwhile (up
// to a memory limit well above what the loop allocates): with 10,000
// client connections its heap is over a GB, and one collection's mark
// phase on its single CPU stalled every simulated agent for half a
// second, which showed as a burst of slow registrations on whichever
// server was under test (both see the same, quieter, client).
func openLoop(agents []*simAgent, rate float64, boot string) ([]time.Duration, error) {
	runtime.GC()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(openLoopMemory))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	lat := make([]time.Duration, len(agents))
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	start := time.Now()
	for k, a := range agents {
		at := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		time.Sleep(time.Until(at))
		wg.Go(func() {
			_, err := a.register(boot)
			lat[k], errs[k] = time.Since(at), err
		})
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("agent %d: %w", agents[k].i, err)
		}
	}
	return lat, nil
}

// writeLatencies writes the open loop's latencies, one line per arrival:
// its scheduled time from the start (s) and its latency (ms), to see when
// the slow ones came.
func writeLatencies(file string, rate float64, lat []time.Duration) error {
	var b strings.Builder
	for k, d := range lat {
		fmt.Fprintf(&b, "%.3f %.2f\n", float64(k)/rate, float64(d)/1e6)
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// openLoopMemory is the load generator's memory limit while its garbage
// collection is held off in the open loop (10,000 agents allocate about
// 2 GB in 80 s; past the limit it collects again).
const openLoopMemory = 6 << 30

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

// allocTimeout is how long an allocated agent may take to receive its
// Install; a miss counts as this long.
const allocTimeout = 10 * time.Second

// allocations times AllocateMachine (on the first replica) → the agent
// receiving the Install, apart for agents on that replica and on others.
func allocations(d *deployment, tlsCfg *tls.Config, agents []*simAgent, samples int, res *result) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(samples+1)*allocTimeout)
	defer cancel()
	conn, err := dial(ctx, d.procs[0].addr, nil, tlsCfg, grpc.WithPerRPCCredentials(pki.Bearer(d.admin)))
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := anvilv1.NewImageServiceClient(conn).CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "bench", Url: "http://images.example/bench.raw", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + strings.Repeat("ab", 32), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	mc := anvilv1.NewMachineServiceClient(conn)
	samples = min(samples, len(agents))
	step := len(agents) / samples
	var same, cross []time.Duration
	res.allocMissed = 0
	for k := range samples {
		// Agents are spread over the replicas i mod N: a step that is a
		// multiple of N would only ever pick agents of replica 0.
		i := k * step
		if n := len(d.procs); n > 1 && step >= n {
			i += k % n
		}
		a := agents[i]
		t := time.Now()
		if _, err := mc.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: a.id, ImageId: "bench"}); err != nil {
			return fmt.Errorf("allocate %s: %w", a.id, err)
		}
		var d time.Duration
		select {
		case got := <-a.got:
			d = got.Sub(t)
		case <-time.After(allocTimeout):
			d = allocTimeout
			res.allocMissed++
		}
		if a.server() == 0 {
			same = append(same, d)
		} else {
			cross = append(cross, d)
		}
	}
	res.allocP50, res.allocP99 = percentiles(same)
	res.crossP50, res.crossP99 = percentiles(cross)
	return nil
}

// failover kills -9 the last replica (the only one, restarted at once,
// when there is one) and times, for each agent attached to it, how long
// until its Wait stream is open again.
func failover(d *deployment, agents []*simAgent, res *result) error {
	victim := len(d.procs) - 1
	var hit []*simAgent
	for _, a := range agents {
		if a.server() == victim {
			hit = append(hit, a)
		}
	}
	p := d.procs[victim]
	killed := time.Now()
	p.kill()
	if len(d.procs) == 1 {
		// The one replica restarts; until its database session ends the
		// advisory lock refuses it.
		var err error
		for range 40 {
			if err = p.start(d.cpus); err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("restart the replica: %w", err)
		}
	}
	res.failAffected = float64(len(hit))
	deadline := time.After(90 * time.Second)
	var lat []time.Duration
	for _, a := range hit {
		select {
		case t := <-a.reopened:
			lat = append(lat, t.Sub(killed))
		case <-deadline:
		}
	}
	res.failBack = float64(len(lat))
	res.failP50, res.failP99 = percentiles(lat)
	return nil
}

// summary is the median and range of one metric over runs.
type summary struct{ med, lo, hi float64 }

func summarize(v []float64) summary {
	s := slices.Clone(v)
	s = slices.DeleteFunc(s, math.IsNaN)
	if len(s) == 0 {
		return summary{math.NaN(), math.NaN(), math.NaN()}
	}
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{m, s[0], s[len(s)-1]}
}

func over(rs []result, f func(result) float64) summary {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return summarize(v)
}

func (s summary) String() string {
	if math.IsNaN(s.med) {
		return "-"
	}
	return fmt.Sprintf("%.1f [%.1f–%.1f]", s.med, s.lo, s.hi)
}

// compare prints one metric of two servers: the median and range of
// each over its runs, the ratio of the medians, and target's verdict
// given that ratio and a's median (none without target).
func compare(name string, a, b []result, f func(result) float64, target func(ratio, a float64) string) {
	x, y := over(a, f), over(b, f)
	ratio, r := "-", math.NaN()
	if y.med > 0 && !math.IsNaN(x.med) {
		r = x.med / y.med
		ratio = fmt.Sprintf("%.2f×", r)
	}
	t := ""
	if target != nil {
		t = target(r, x.med)
	}
	fmt.Printf("%-48s %24s %24s %8s   %s\n", name, x, y, ratio, t)
}

func report(cfg config, n int, base, an, rep, floor []result) {
	fmt.Printf("\n== %d waiting agents: median [range] of %d runs; both servers on CPUs %s, the same rate, intervals, inventory and transport options\n",
		n, cfg.runs, cfg.serverCPUs)
	fmt.Printf("%-48s %24s %24s %8s   %s\n", "metric", "anvil-controller", "bare gRPC", "ratio", "target")
	row := func(name string, f func(result) float64, target func(ratio, a float64) string) {
		compare(name, an, base, f, target)
	}
	verdict := func(ok bool, what string) string {
		if ok {
			return what + ": PASS"
		}
		return what + ": FAIL"
	}
	row("TLS connections/s (agent boot)", func(r result) float64 { return r.connPerSec }, nil)
	row(fmt.Sprintf("registrations/s, capacity (%d in flight)", cfg.conc), func(r result) float64 { return r.capacity }, nil)
	row("register p50 / ms, saturated", func(r result) float64 { return r.satP50 }, nil)
	row("register p99 / ms, saturated", func(r result) float64 { return r.satP99 }, nil)
	row(fmt.Sprintf("register p50 / ms at %.0f/s, client", cfg.rate), func(r result) float64 { return r.p50 }, nil)
	row(fmt.Sprintf("register p99 / ms at %.0f/s, client", cfg.rate), func(r result) float64 { return r.p99 },
		func(ratio, _ float64) string { return verdict(ratio <= 1.2, "≤ 1.2× baseline") })
	row(fmt.Sprintf("register p50 / ms at %.0f/s, server", cfg.rate), func(r result) float64 { return r.srvP50 }, nil)
	row(fmt.Sprintf("register p99 / ms at %.0f/s, server", cfg.rate), func(r result) float64 { return r.srvP99 }, nil)
	row("heartbeat p99 / ms, server", func(r result) float64 { return r.hbSrvP99 }, nil)
	row("heartbeats answered", func(r result) float64 { return r.hbOK }, nil)
	row("heartbeats failed", func(r result) float64 { return r.hbErr }, nil)
	row("server RSS per waiting agent / KiB", func(r result) float64 { return r.rssPerAgent },
		func(ratio, a float64) string {
			return verdict(ratio <= 1.1, fmt.Sprintf("≤ 1.1× baseline (%.1f KiB)", a))
		})
	row("server RSS / MiB, all waiting", func(r result) float64 { return r.rssMiB }, nil)
	row("allocate → Install received p50 / ms", func(r result) float64 { return r.allocP50 }, nil)
	row("allocate → Install received p99 / ms", func(r result) float64 { return r.allocP99 },
		func(_, a float64) string { return verdict(a < 100, "< 100 ms") })
	row("allocations not received within 10 s", func(r result) float64 { return r.allocMissed }, nil)
	if len(floor) > 0 {
		fmt.Printf("\n-- the floor of a controller that keeps what it is told: the bare server storing each registration's inventory in SQLite\n")
		fmt.Printf("%-48s %24s %24s %8s   %s\n", "metric", "anvil-controller", "bare gRPC + SQLite", "ratio", "proposed target")
		frow := func(name string, f func(result) float64, target func(ratio, a float64) string) {
			compare(name, an, floor, f, target)
		}
		frow(fmt.Sprintf("registrations/s, capacity (%d in flight)", cfg.conc), func(r result) float64 { return r.capacity }, nil)
		frow(fmt.Sprintf("register p50 / ms at %.0f/s, client", cfg.rate), func(r result) float64 { return r.p50 }, nil)
		frow(fmt.Sprintf("register p99 / ms at %.0f/s, client", cfg.rate), func(r result) float64 { return r.p99 },
			func(ratio, _ float64) string { return verdict(ratio <= 1.2, "≤ 1.2× the floor") })
		frow(fmt.Sprintf("register p99 / ms at %.0f/s, server", cfg.rate), func(r result) float64 { return r.srvP99 }, nil)
		frow("server RSS per waiting agent / KiB", func(r result) float64 { return r.rssPerAgent }, nil)
	}
	if len(rep) == 0 {
		return
	}
	fmt.Printf("\n-- %d replicas on one PostgreSQL (its server on CPUs %s too) vs the single controller on SQLite\n", cfg.replicas, cfg.serverCPUs)
	fmt.Printf("%-48s %24s %24s %8s   %s\n", "metric", fmt.Sprintf("%d replicas, PostgreSQL", cfg.replicas), "1 controller, SQLite", "ratio", "target")
	rrow := func(name string, f func(result) float64, target func(a float64) string) {
		var t func(_, a float64) string
		if target != nil {
			t = func(_, a float64) string { return target(a) }
		}
		compare(name, rep, an, f, t)
	}
	rrow(fmt.Sprintf("registrations/s, capacity (%d in flight)", cfg.conc), func(r result) float64 { return r.capacity }, nil)
	rrow(fmt.Sprintf("register p99 / ms at %.0f/s, client", cfg.rate), func(r result) float64 { return r.p99 }, nil)
	rrow("server RSS per waiting agent / KiB (sum)", func(r result) float64 { return r.rssPerAgent }, nil)
	rrow("allocate → Install p99 / ms, same replica", func(r result) float64 { return r.allocP99 },
		func(a float64) string { return verdict(a < 100, "< 100 ms") })
	rrow("allocate → Install p99 / ms, across replicas", func(r result) float64 { return r.crossP99 },
		func(a float64) string {
			if math.IsNaN(a) {
				return "(one replica: none across)"
			}
			return verdict(a < 100, "< 100 ms")
		})
	rrow("allocations not received within 10 s", func(r result) float64 { return r.allocMissed }, nil)
	rrow("failover: agents on the killed replica", func(r result) float64 { return r.failAffected }, nil)
	rrow("failover: of them, Wait open again", func(r result) float64 { return r.failBack }, nil)
	rrow("failover p50 / ms, kill -9 → Wait open", func(r result) float64 { return r.failP50 }, nil)
	rrow("failover p99 / ms, kill -9 → Wait open", func(r result) float64 { return r.failP99 },
		func(a float64) string { return verdict(a < 30000, "< 30 s") })
	if cfg.replicas == 1 {
		fmt.Println("(one replica: it is restarted after kill -9, so failover includes its restart)")
	}
}
