// Command fwapply benchmarks anvil-firewall's compile + apply against nft
// -f of the same ruleset text, in one run, in network namespaces it creates
// (make bench, BENCH=fwapply; results in docs/benchmarks.md):
//
//	anvil: compile.Compile of a synthetic cluster snapshot, then
//	       apply.Applier.Apply (the new table, dormant, in one netlink
//	       batch; then a second that deletes the old one and wakes it);
//	nft -f: the same ruleset as text (model.RenderReplace, written to a file
//	       beforehand; only nft is timed);
//	anchor: the two passes metal-stack's firewall-controller pays for a
//	       reload: nft -c -f, then nft -f.
//
// Every run replaces a table that is already there, on both sides. After
// the runs, the two namespaces' `nft list table` must be identical.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/anvil-metal/anvil/firewall/app"
	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/test/netnstest"
)

func main() {
	var (
		sizes   = flag.String("policies", "100,1000,2000,10000,100x100", "comma-separated sizes: N policies with 5 CIDRs each, or NxC: N policies with C CIDRs each")
		runs    = flag.Int("runs", 3, "timed runs per candidate and size (the median is reported)")
		big     = flag.Int("big", 5000, "sizes with at least this many policies are run once (minutes per run)")
		dir     = flag.String("dir", "/var/tmp/anvil-bench", "work directory (the nft -f ruleset files)")
		cpuprof = flag.String("cpuprofile", "", "write a CPU profile of anvil's compile + apply runs at the largest size")
	)
	flag.Parse()
	// The daemon's GC settings (GOGC=400, a 1 GiB soft limit, unless set
	// in the environment): the benchmark measures what anvil-firewall runs.
	app.TuneGC()
	var ns []size
	for _, f := range strings.Split(*sizes, ",") {
		np, per, wide := strings.Cut(strings.TrimSpace(f), "x")
		if !wide {
			per = "5"
		}
		n, err1 := strconv.Atoi(np)
		c, err2 := strconv.Atoi(per)
		if err1 != nil || err2 != nil || n <= 0 || c < 5 {
			fmt.Fprintf(os.Stderr, "fwapply: bad size %q (N or NxC, C >= 5)\n", f)
			os.Exit(2)
		}
		ns = append(ns, size{n, c})
	}
	if err := run(ns, max(*runs, 1), *big, *dir, *cpuprof); err != nil {
		fmt.Fprintln(os.Stderr, "fwapply:", err)
		os.Exit(1)
	}
}

// size is a synthetic cluster: policies NetworkPolicies of perPolicy CIDRs.
type size struct{ policies, perPolicy int }

// result is the medians of one size.
type result struct {
	policies, runs, cidrs           int
	sets, elements, chains, rules   int
	compile, apply, total           time.Duration
	applyUser, applySys             time.Duration // CPU of the apply runs' median: the Go side and the kernel's
	nft, nftCPU, anchor, anchorHalf time.Duration
	counters                        time.Duration // Applier.Counters: one rule dump of the table
	messages, batchKiB              int
}

func run(sizes []size, runs, big int, dir, cpuprof string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, nftables)")
	}
	nftBin, err := exec.LookPath("nft")
	if err != nil {
		return fmt.Errorf("nft not found (hack/install-deps.sh installs it)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	anvilNS, err := newNS("anvil-bench-apply")
	if err != nil {
		return err
	}
	defer anvilNS.close()
	nftNS, err := newNS("anvil-bench-nft")
	if err != nil {
		return err
	}
	defer nftNS.close()
	// Interrupted: remove the namespaces (and the tables in them) anyway.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		anvilNS.close()
		nftNS.close()
		fmt.Fprintln(os.Stderr, "fwapply: interrupted by", s)
		os.Exit(1)
	}()

	cfg := config.Defaults()
	cfg.Masquerade = true
	cfg.LogDrops = true
	gcPercent := debug.SetGCPercent(100) // read it: put it back at once
	debug.SetGCPercent(gcPercent)
	fmt.Printf("nft: %s; %d CPUs; median of %d runs (1 from %d policies); every run replaces an existing table; anvil's GC: GOGC=%d, soft limit %d MiB\n\n",
		nftVersion(nftBin), runtime.NumCPU(), runs, big, gcPercent, debug.SetMemoryLimit(-1)>>20)
	var results []result
	for i, n := range sizes {
		prof := ""
		if i == len(sizes)-1 {
			prof = cpuprof
		}
		k := runs
		if n.policies >= big {
			k = 1
		}
		// Only the first size warms up: later ones replace the previous
		// size's table, on both sides alike.
		r, err := measureSize(n, k, i == 0, cfg, dir, nftBin, anvilNS, nftNS, prof)
		if err != nil {
			return fmt.Errorf("%d policies: %w", n.policies, err)
		}
		results = append(results, r)
		fmt.Printf("%d policies × %d CIDRs: anvil %s ms, nft -f %s ms\n", n.policies, n.perPolicy, ms(r.total), ms(r.nft))
	}
	report(results)
	return nil
}

func measureSize(sz size, runs int, warmup bool, cfg config.Config, dir, nftBin string, anvilNS, nftNS *namedNS, cpuprof string) (result, error) {
	n := sz.policies
	snap := snapshot(n, sz.perPolicy)
	rs, errs := compile.Compile(snap, cfg)
	if len(errs) > 0 {
		return result{}, fmt.Errorf("compile: %v", errs[0])
	}
	r := result{policies: n, runs: runs, cidrs: cidrs(snap), sets: len(rs.Sets), chains: len(rs.Chains)}
	for _, s := range rs.Sets {
		r.elements += len(s.Elements)
	}
	for _, c := range rs.Chains {
		r.rules += len(c.Rules)
	}
	file := filepath.Join(dir, fmt.Sprintf("fwapply-%dx%d.nft", n, sz.perPolicy))
	if err := os.WriteFile(file, []byte(model.RenderReplace(rs)), 0o644); err != nil {
		return r, err
	}
	defer os.Remove(file)

	// anvil: compile + apply with a new Applier each run (it has not seen
	// the table, so it sends the batch), replacing the table left by the
	// previous run, or by the previous size.
	first := 1
	if warmup {
		first = 0
	}
	var comp, app, tot, user, sys, ctrs []time.Duration
	var last apply.Stats
	var stopProf func()
	for i := first; i <= runs; i++ {
		if i == 1 && cpuprof != "" {
			f, err := os.Create(cpuprof)
			if err != nil {
				return r, err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return r, err
			}
			stopProf = func() { pprof.StopCPUProfile(); f.Close() }
		}
		c, a, u, s, rd, st, err := anvilRun(snap, cfg, anvilNS)
		if err != nil {
			return r, err
		}
		if i > 0 {
			comp, app, tot, user, sys = append(comp, c), append(app, a), append(tot, c+a), append(user, u), append(sys, s)
			ctrs = append(ctrs, rd)
			last = st
		}
	}
	if stopProf != nil {
		stopProf()
	}
	r.compile, r.apply, r.total, r.counters = median(comp), median(app), median(tot), median(ctrs)
	mi := medianIndex(app)
	r.applyUser, r.applySys = user[mi], sys[mi]
	r.messages, r.batchKiB = last.LastMessages, last.LastBytes>>10

	// nft -f of the same text, and the anchor's nft -c -f + nft -f.
	var nftT, nftC, anchorT, checkT []time.Duration
	for i := first; i <= runs; i++ {
		w, cpu, err := nftNS.exec(nftBin, "-f", file)
		if err != nil {
			return r, err
		}
		if i > 0 {
			nftT, nftC = append(nftT, w), append(nftC, cpu)
		}
	}
	for i := 0; i < runs; i++ {
		wc, _, err := nftNS.exec(nftBin, "-c", "-f", file)
		if err != nil {
			return r, err
		}
		wf, _, err := nftNS.exec(nftBin, "-f", file)
		if err != nil {
			return r, err
		}
		anchorT, checkT = append(anchorT, wc+wf), append(checkT, wc)
	}
	r.nft, r.nftCPU = median(nftT), nftC[medianIndex(nftT)]
	r.anchor, r.anchorHalf = median(anchorT), median(checkT)

	// Both sides must hold the same table.
	// The applier's table is live under one of its two names.
	name, la, err := netnstest.LiveTable(anvilNS.name, cfg.Table, apply.AltTable(cfg.Table))
	if err != nil {
		return r, err
	}
	la = strings.Replace(la, "table inet "+name+" {", "table inet "+cfg.Table+" {", 1)
	lb, err := nftNS.output(nftBin, "list", "table", "inet", cfg.Table)
	if err != nil {
		return r, err
	}
	if la != lb {
		return r, fmt.Errorf("the applier's table and nft -f's differ (%d vs %d bytes of nft list)", len(la), len(lb))
	}
	return r, nil
}

// anvilRun times one compile and one apply (with the CPU time the apply
// took in user space and in the kernel, which processes the batch inside
// sendmsg).
func anvilRun(snap cluster.Snapshot, cfg config.Config, ns *namedNS) (comp, app, user, sys, counters time.Duration, st apply.Stats, err error) {
	ap, err := apply.New(apply.WithNetNS(int(ns.h)))
	if err != nil {
		return
	}
	defer ap.Close()
	runtime.GC()
	t0 := time.Now()
	rs, errs := compile.Compile(snap, cfg)
	t1 := time.Now()
	if len(errs) > 0 {
		err = errs[0]
		return
	}
	u0, s0 := cpuTimes()
	t2 := time.Now()
	changed, err := ap.Apply(rs)
	t3 := time.Now()
	u1, s1 := cpuTimes()
	if err == nil && !changed {
		err = fmt.Errorf("apply sent nothing")
	}
	if err != nil {
		return
	}
	// What a metrics scrape costs: reading every rule's counter.
	t4 := time.Now()
	if _, err = ap.Counters(); err != nil {
		return
	}
	return t1.Sub(t0), t3.Sub(t2), u1 - u0, s1 - s0, time.Since(t4), ap.Stats(), nil
}

func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Microseconds())/1000) }

func report(rs []result) {
	fmt.Printf("\n%-9s %4s %7s %6s %8s %7s %6s | %8s %8s %8s %13s | %8s %8s | %9s %9s\n",
		"policies", "runs", "CIDRs", "sets", "elements", "rules", "msgs",
		"compile", "apply", "total", "apply usr/sys", "nft -f", "anchor", "nft/apply", "nft/total")
	for _, r := range rs {
		fmt.Printf("%-9d %4d %7d %6d %8d %7d %6d | %8s %8s %8s %6s/%-6s | %8s %8s | %8.2fx %8.2fx\n",
			r.policies, r.runs, r.cidrs, r.sets, r.elements, r.rules, r.messages,
			ms(r.compile), ms(r.apply), ms(r.total), ms(r.applyUser), ms(r.applySys),
			ms(r.nft), ms(r.anchor), r.nft.Seconds()/r.apply.Seconds(), r.nft.Seconds()/r.total.Seconds())
	}
	fmt.Println("\ntimes in ms; anchor = nft -c -f then nft -f (two passes); ratios > 1: anvil is faster")
	for _, r := range rs {
		fmt.Printf("%d policies, %d CIDRs: batch %d KiB; nft -f CPU %s ms; anchor's nft -c pass alone %s ms; reading all counters %s ms\n",
			r.policies, r.cidrs, r.batchKiB, ms(r.nftCPU), ms(r.anchorHalf), ms(r.counters))
	}
	for _, r := range rs {
		if r.cidrs >= 10000 && r.cidrs <= 10000*11/10 {
			verdict := "met"
			if r.total >= time.Second {
				verdict = "MISSED"
			}
			fmt.Printf("target: %d CIDRs compiled + applied in %s ms (< 1000 ms): %s\n", r.cidrs, ms(r.total), verdict)
		}
	}
	slower := 0
	for _, r := range rs {
		if r.total > r.nft {
			slower++
		}
	}
	fmt.Printf("target: compile + apply no slower than nft -f of the text: %d of %d sizes slower\n", slower, len(rs))
}

func median(ds []time.Duration) time.Duration { return ds[medianIndex(ds)] }

// medianIndex is the index of the median element of ds (unsorted).
func medianIndex(ds []time.Duration) int {
	idx := make([]int, len(ds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(ds[a] - ds[b]) })
	return idx[len(idx)/2]
}

func nftVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	return strings.TrimSpace(string(out))
}

// namedNS is a network namespace the benchmark created (named, under
// /var/run/netns, so it can be inspected while the benchmark runs).
type namedNS struct {
	name string
	h    netns.NsHandle
	once sync.Once
}

func newNS(name string) (*namedNS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	_ = netns.DeleteNamed(name) // left over from an interrupted run
	h, err := netns.NewNamed(name)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("return to the original netns: %v", err))
	}
	return &namedNS{name: name, h: h}, nil
}

func (n *namedNS) close() {
	n.once.Do(func() {
		n.h.Close()
		_ = netns.DeleteNamed(n.name)
	})
}

// exec runs a command inside the namespace and returns its wall and CPU
// time. The child is forked from an OS thread that has entered the
// namespace, so no `ip netns exec` wrapper adds to nft's time.
func (n *namedNS) exec(bin string, args ...string) (wall, cpu time.Duration, err error) {
	cmd := exec.Command(bin, args...)
	var out []byte
	err = n.do(func() error {
		start := time.Now()
		var e error
		out, e = cmd.CombinedOutput()
		wall = time.Since(start)
		return e
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
	}
	cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return wall, cpu, nil
}

func (n *namedNS) output(bin string, args ...string) (string, error) {
	var out []byte
	err := n.do(func() error {
		var e error
		out, e = exec.Command(bin, args...).Output()
		return e
	})
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	return string(out), nil
}

func (n *namedNS) do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		return err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("return to the original netns: %v", err))
		}
	}()
	return fn()
}
