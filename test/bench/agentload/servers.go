package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
)

// proc is one server process under test, started under taskset on the
// server's CPUs.
type proc struct {
	argv                 []string
	env                  []string
	addr, debug, metrics string // gRPC, pprof/free-os-memory, /metrics
	cmd                  *exec.Cmd
	exited               chan struct{}
}

func (p *proc) start(cpus string) error {
	p.cmd = exec.Command("taskset", append([]string{"-c", cpus}, p.argv...)...)
	p.cmd.Env, p.cmd.Stderr = p.env, os.Stderr
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.argv[0], err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	for range 400 {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before listening on %s: %v", p.argv[0], p.addr, p.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.kill()
	return fmt.Errorf("%s did not listen on %s within 20 s", p.argv[0], p.addr)
}

// kill is kill -9 (a crash, as the replicas' failover is measured).
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// rss reads the process's VmRSS in bytes (taskset execs the server, so
// the pid is the server's).
func (p *proc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", p.cmd.Process.Pid)
}

// freeOSMemory asks the server to collect and return freed memory to the
// OS (POST /debug/free-os-memory on its debug address).
func (p *proc) freeOSMemory() error {
	resp, err := http.Post("http://"+p.debug+"/debug/free-os-memory", "", nil)
	if err != nil {
		return fmt.Errorf("free OS memory on %s: %w", p.debug, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	err = errors.Join(err, resp.Body.Close())
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("free OS memory on %s: %s", p.debug, resp.Status)
	}
	return err
}

// histogram reads the server's RPCLatency histogram of method.
func (p *proc) histogram(method string) (histogram, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.metrics, err)
	}
	defer resp.Body.Close()
	return parseHistogram(resp.Body, "anvil_grpc_server_rpc_seconds", method)
}

// deployment is a started server (one process, or replicas) and what an
// agent needs to talk to it.
type deployment struct {
	name     string
	anvil    bool
	procs    []*proc
	caPEM    []byte
	boot     string
	admin    string
	replicas bool // kill -9 one process at the end and time the failover
	dirs     []string
	cpus     string
}

func (d *deployment) addrs() []string {
	var out []string
	for _, p := range d.procs {
		out = append(out, p.addr)
	}
	return out
}

// profile fetches /debug/pprof/<what> from each server process of d into
// dir/<deployment>-<process>-<name>, in the background (with the
// process's /proc/<pid>/smaps_rollup and smaps beside a heap profile); the channel
// gives the first error once all are written. Nothing when dir is "".
func (d *deployment) profile(dir, name, what string) <-chan error {
	done := make(chan error, 1)
	if dir == "" {
		done <- nil
		return done
	}
	errs := make(chan error, len(d.procs))
	for k, p := range d.procs {
		file := filepath.Join(dir, fmt.Sprintf("%s-%d-%s", strings.NewReplacer(" ", "", "×", "x").Replace(d.name), k, name))
		go func() {
			err := fetchTo("http://"+p.debug+"/debug/pprof/"+what, file)
			if err == nil && strings.HasPrefix(what, "heap") {
				for _, f := range []struct{ proc, suffix string }{{"smaps_rollup", ".smaps"}, {"smaps", ".smaps-full"}} {
					var b []byte
					if b, err = os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.cmd.Process.Pid, f.proc)); err == nil {
						err = os.WriteFile(file+f.suffix, b, 0o644)
					}
					if err != nil {
						break
					}
				}
			}
			errs <- err
		}()
	}
	go func() {
		var first error
		for range d.procs {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		done <- first
	}()
	return done
}

// fetchTo writes the body of a GET of url to file.
func fetchTo(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

func (d *deployment) stop() {
	for _, p := range d.procs {
		p.kill()
	}
	for _, dir := range d.dirs {
		os.RemoveAll(dir)
	}
}

// serverEnv is the environment of every server process: GOMAXPROCS the
// number of server CPUs, and the same GC settings.
func serverEnv(cfg config) []string {
	env := append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(cpuCount(cfg.serverCPUs)))
	if cfg.gogc != "" {
		env = append(env, "GOGC="+cfg.gogc)
	}
	if cfg.gomemlimit != "" {
		env = append(env, "GOMEMLIMIT="+cfg.gomemlimit)
	}
	return env
}

// parseCPUs parses a taskset list ("0", "0-1", "0,2").
func parseCPUs(list string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for _, f := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return set, fmt.Errorf("CPU list %q: want e.g. 0, 0-1 or 0,2", list)
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return set, nil
}

// cpuCount counts the CPUs of a list parseCPUs accepts (1 if it does not).
func cpuCount(list string) int {
	set, err := parseCPUs(list)
	if err != nil {
		return 1
	}
	return max(set.Count(), 1)
}

// freeAddr returns a free loopback address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func freeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// startBaseline starts the bare gRPC server (this program,
// serve-baseline); with persist, the floor that stores each registration
// in SQLite (serve-baseline -persist).
func startBaseline(cfg config, persist bool) (*deployment, error) {
	dir, err := os.MkdirTemp("", "agentload-")
	if err != nil {
		return nil, err
	}
	d := &deployment{name: "bare gRPC", dirs: []string{dir}, cpus: cfg.serverCPUs}
	if persist {
		d.name = "bare gRPC + SQLite"
	}
	ca, err := pki.EnsureCA(dir)
	if err != nil {
		d.stop()
		return nil, err
	}
	cert, key, err := ca.EnsureServingCert(dir, nil)
	if err != nil {
		d.stop()
		return nil, err
	}
	a, err := freeAddrs(2)
	if err != nil {
		d.stop()
		return nil, err
	}
	p := &proc{addr: a[0], debug: a[1], metrics: a[1], env: serverEnv(cfg),
		argv: []string{cfg.self, "serve-baseline", "-listen", a[0], "-cert", cert, "-key", key, "-debug", a[1],
			"-heartbeat", cfg.heartbeat.String(), "-keepalive", cfg.keepalive.String(), "-buffers", strconv.Itoa(cfg.buffers)}}
	if persist {
		p.argv = append(p.argv, "-persist", dir)
	}
	d.procs, d.caPEM = []*proc{p}, ca.CertPEM()
	if err := p.start(cfg.serverCPUs); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// startAnvil starts anvil-controller: one on SQLite (store ""), or
// replicas on one PostgreSQL database. The first initializes the data dir
// (CA, serving certificate for 127.0.0.1, tokens, signing keys); the
// others get a copy of it, as replicas on other hosts would.
func startAnvil(cfg config, store string, replicas int) (*deployment, error) {
	d := &deployment{name: "anvil-controller", anvil: true, cpus: cfg.serverCPUs}
	if store != "" {
		d.name, d.replicas = fmt.Sprintf("anvil ×%d on PostgreSQL", replicas), true
	}
	for k := range max(replicas, 1) {
		dir, err := os.MkdirTemp("", "agentload-")
		if err != nil {
			d.stop()
			return nil, err
		}
		d.dirs = append(d.dirs, dir)
		if k > 0 {
			if err := copyDir(d.dirs[0], dir); err != nil {
				d.stop()
				return nil, err
			}
		}
		a, err := freeAddrs(3)
		if err != nil {
			d.stop()
			return nil, err
		}
		p := &proc{addr: a[0], debug: a[1], metrics: a[2], env: serverEnv(cfg),
			argv: []string{cfg.controller, "--data-dir", dir, "--listen", a[0], "--log-level", "error",
				"--heartbeat-interval", cfg.heartbeat.String(), "--keepalive-interval", cfg.keepalive.String(),
				"--debug-addr", a[1], "--metrics-listen", a[2]}}
		if store != "" {
			p.argv = append(p.argv, "--store", store)
		}
		d.procs = append(d.procs, p)
		if err := p.start(cfg.serverCPUs); err != nil {
			d.stop()
			return nil, fmt.Errorf("replica %d: %w", k, err)
		}
	}
	var err error
	if d.caPEM, err = os.ReadFile(filepath.Join(d.dirs[0], "ca.crt")); err == nil {
		if d.boot, err = pki.ReadTokenFile(filepath.Join(d.dirs[0], "boot.token")); err == nil {
			d.admin, err = pki.ReadTokenFile(filepath.Join(d.dirs[0], "admin.token"))
		}
	}
	if err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// copyDir copies the files of a data dir (keys, CA, certificate, tokens).
func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(dst, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
}

// postgres is the replicas' database server.
type postgres struct {
	c *pgtest.Cluster
	n int
}

// startPostgres starts a PostgreSQL cluster (pgtest.Start: initdb and
// pg_ctl as nobody, a unix socket) pinned to cpus: it is forked from an
// OS thread whose affinity is set to them, and the server inherits it.
// The thread ends with the goroutine (it stays locked).
func startPostgres(cpus string) (*postgres, error) {
	set, err := parseCPUs(cpus)
	if err != nil {
		return nil, err
	}
	type started struct {
		c   *pgtest.Cluster
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ch <- started{err: fmt.Errorf("pin PostgreSQL to CPUs %s: %w", cpus, err)}
			return
		}
		c, err := pgtest.Start()
		ch <- started{c, err}
	}()
	s := <-ch
	if s.err != nil {
		return nil, s.err
	}
	return &postgres{c: s.c}, nil
}

// newDatabase creates an empty database and returns its URL.
func (p *postgres) newDatabase() (string, error) {
	p.n++
	name := fmt.Sprintf("agentload%d", p.n)
	db, err := sql.Open("pgx", p.c.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.c.URL(name), nil
}

func (p *postgres) stop() error { return p.c.Stop() }
