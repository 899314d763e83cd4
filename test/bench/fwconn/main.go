//go:build linux

// Command fwconn measures the rate of new connections (TCP connects and
// UDP request/echo exchanges, each from a fresh 5-tuple so that every one
// is a conntrack NEW packet the policies judge) from a pod in the
// "cluster" namespace through the "fw" namespace to the "outside"
// namespace of test/firewall's topology, in one run, under three
// firewall states (make bench, BENCH=fwconn; results in
// docs/benchmarks.md):
//
//	(a) no ruleset: the anvil table is absent (plain forwarding, no
//	    conntrack in the namespace) — the baseline;
//	(b) conntrack only: a table whose forward chain accepts established
//	    and drops invalid packets, policy accept — what any stateful
//	    firewall costs;
//	(c) anvil: the compiled ruleset of policies that select the client
//	    pod and allow egress to ~10,000 CIDRs, applied by firewall/apply;
//	    only the last policy's last CIDR contains the destinations, so
//	    every connection goes through every policy's set lookup.
//
// The states alternate run after run (in a rotating order) and the median
// of the runs is reported, with the ratio of (c) to (a) (target >= 0.9)
// and to (b), also as the median of the ratios within each run. Client,
// servers and the forwarding kernel share the machine's cores, so the
// ratio is the share of the whole per-connection cost that the firewall
// adds.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vishvananda/netlink"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
	fwtest "github.com/anvil-metal/anvil/test/firewall"
)

func main() {
	var (
		cidrs    = flag.Int("cidrs", 10000, "CIDRs in the policies that select the client pod")
		policies = flag.Int("policies", 10, "policies the CIDRs are spread over")
		duration = flag.Duration("duration", 3*time.Second, "measuring time per state, protocol and run")
		runs     = flag.Int("runs", 3, "runs (the median is reported)")
		workers  = flag.Int("workers", 16, "connections in flight")
		protos   = flag.String("protos", "tcp,udp", "protocols to measure")
	)
	flag.Parse()
	if err := run(*cidrs, *policies, *duration, *runs, *workers, strings.Split(*protos, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "fwconn:", err)
		os.Exit(1)
	}
}

// snapshot is one namespace with the client pod (the plan's first pod)
// and n policies selecting it for egress, with cidrs CIDRs in all: /32s
// from 10.128.0.0/10, every other address (so no two merge into one
// interval), and last of all 192.0.2.0/24, which holds the destinations.
func snapshot(plan fwtest.Plan, n, cidrs int) cluster.Snapshot {
	s := cluster.Snapshot{
		Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}},
		Pods: []corev1.Pod{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "client", Labels: map[string]string{"app": "client"}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: plan.Pods[0].V4.String(),
				PodIPs: []corev1.PodIP{{IP: plan.Pods[0].V4.String()}, {IP: plan.Pods[0].V6.String()}}},
		}},
	}
	per := (cidrs + n - 1) / n
	k := 0
	for i := range n {
		p := networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("egress-%03d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
			},
		}
		for j := 0; j < per && k < cidrs; j++ {
			cidr := "192.0.2.0/24"
			if k < cidrs-1 {
				a := uint32(10)<<24 | uint32(128)<<16 + uint32(2*k)
				cidr = netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}).String() + "/32"
			}
			p.Spec.Egress[0].To = append(p.Spec.Egress[0].To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}})
			k++
		}
		s.Policies = append(s.Policies, p)
	}
	return s
}

// state is one firewall configuration of the fw namespace.
type state struct {
	name  string
	setup func() error
}

func run(cidrs, npol int, duration time.Duration, runs, workers int, protos []string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	topo, err := fwtest.New()
	if err != nil {
		return err
	}
	defer topo.Close()
	plan := topo.Plan
	cfg := config.Defaults()
	cfg.ClusterInterfaces = []string{fwtest.ClusterIf}
	snap := snapshot(plan, npol, cidrs)
	start := time.Now()
	rs, errs := compile.Compile(snap, cfg)
	if len(errs) > 0 {
		return fmt.Errorf("compile: %v", errs)
	}
	compiled := time.Since(start)
	elements := 0
	for _, s := range rs.Sets {
		elements += len(s.Elements)
	}
	a, err := apply.New(apply.WithNetNS(topo.FW.Fd()), apply.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	defer a.Close()
	nft := func(script string, args ...string) error {
		cmd := exec.Command("ip", append([]string{"netns", "exec", topo.FW.Name, "nft"}, args...)...)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	clear := func() error {
		return nft("flush ruleset\n", "-f", "-")
	}
	ctOnly := fmt.Sprintf(`table inet %s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		ct state invalid drop
	}
}
`, cfg.Table)
	states := []state{
		{"no ruleset (table absent)", clear},
		{"conntrack only (established accept, invalid drop)", func() error {
			if err := clear(); err != nil {
				return err
			}
			return nft(ctOnly, "-f", "-")
		}},
		{fmt.Sprintf("anvil: %d policies, %d CIDRs", npol, cidrs), func() error {
			if err := clear(); err != nil {
				return err
			}
			_, err := a.Apply(rs)
			return err
		}},
	}

	// The ruleset must be in force: the client reaches the destinations
	// (last CIDR) and nothing else.
	if err := states[2].setup(); err != nil {
		return err
	}
	ctx := context.Background()
	src := plan.Pods[0].V4
	var targets []fwtest.Probe
	for _, dst := range []netip.Addr{plan.Outside[0], plan.Outside[1]} {
		for _, port := range plan.Ports {
			targets = append(targets, fwtest.Probe{Src: src, Dst: dst, Port: port})
		}
	}
	for _, proto := range []uint8{model.ProtoTCP, model.ProtoUDP} {
		ok := fwtest.Probe{Src: src, Dst: plan.Outside[0], Proto: proto, Port: 80}
		if err := topo.Attempt(ctx, ok, time.Second); err != nil {
			return fmt.Errorf("with the ruleset, %s: %v (want it to pass)", ok, err)
		}
		no := fwtest.Probe{Src: src, Dst: plan.Outside[2], Proto: proto, Port: 80}
		if err := topo.Attempt(ctx, no, 300*time.Millisecond); err != fwtest.ErrBlocked {
			return fmt.Errorf("with the ruleset, %s: %v (want it blocked)", no, err)
		}
	}
	fmt.Printf("ruleset: %d sets, %d elements, %d chains; compiled in %v; client %s -> %s and %s on %d ports, %d connections in flight, %v per measurement, %d runs\n",
		len(rs.Sets), elements, len(rs.Chains), compiled.Round(time.Millisecond), src, plan.Outside[0], plan.Outside[1],
		len(plan.Ports), workers, duration, runs)

	// rates[state][proto] are the runs' connections per second.
	// fails[state][proto] counts connections that timed out or failed.
	rates := make([][][]float64, len(states))
	fails := make([][]int64, len(states))
	for i := range rates {
		rates[i] = make([][]float64, len(protos))
		fails[i] = make([]int64, len(protos))
	}
	for r := 0; r < runs; r++ {
		// Rotate the order, so that no state always follows another.
		for k := range states {
			si := (k + r) % len(states)
			st := states[si]
			if err := st.setup(); err != nil {
				return fmt.Errorf("%s: %w", st.name, err)
			}
			for pi, proto := range protos {
				// Each measurement starts from an empty conntrack table: at
				// these rates a few seconds of connections fill it (its
				// maximum, nf_conntrack_max, is host-wide; new flows are
				// dropped when it is full).
				if err := topo.FW.Netlink().ConntrackTableFlush(netlink.ConntrackTable); err != nil {
					return fmt.Errorf("flush conntrack in %s: %w", topo.FW.Name, err)
				}
				n, failed, err := measure(ctx, topo, targets, proto, duration, workers)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", st.name, proto, err)
				}
				fails[si][pi] += failed
				rates[si][pi] = append(rates[si][pi], float64(n)/duration.Seconds())
			}
		}
	}
	fmt.Printf("\n%-52s", "new connections/s (median of runs; failed in all runs)")
	for _, p := range protos {
		fmt.Printf(" %18s", strings.ToUpper(p))
	}
	fmt.Println()
	med := make([][]float64, len(states))
	for si, st := range states {
		fmt.Printf("%-52s", st.name)
		for pi := range protos {
			med[si] = append(med[si], median(rates[si][pi]))
			fmt.Printf(" %10.0f (%5d)", med[si][pi], fails[si][pi])
		}
		fmt.Println()
	}
	// The machine's load drifts: a ratio within each run (states measured
	// seconds apart) is steadier than the ratio of medians.
	for pi, p := range protos {
		var none, ct []float64
		for r := range runs {
			none = append(none, rates[2][pi][r]/rates[0][pi][r])
			ct = append(ct, rates[2][pi][r]/rates[1][pi][r])
		}
		fmt.Printf("ratio anvil vs no ruleset, %s: %.2fx (target >= 0.9; per run %.2f..%.2f, median %.2f); vs conntrack only: %.2fx (per run median %.2f)\n",
			strings.ToUpper(p), med[2][pi]/med[0][pi], slices.Min(none), slices.Max(none), median(none), med[2][pi]/med[1][pi], median(ct))
	}
	return nil
}

// measure opens new connections from workers loops for d, cycling over
// the targets (each attempt from a fresh source port), and returns how
// many got through and how many did not (timed out after a second, or
// failed otherwise: the first such error is printed).
func measure(ctx context.Context, topo *fwtest.Topology, targets []fwtest.Probe, proto string, d time.Duration, workers int) (ok, failed int64, err error) {
	var p uint8
	switch proto {
	case "tcp":
		p = model.ProtoTCP
	case "udp":
		p = model.ProtoUDP
	default:
		return 0, 0, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	var okN, failN atomic.Int64
	var next atomic.Uint64
	var mu sync.Mutex
	var first error
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				t := targets[next.Add(1)%uint64(len(targets))]
				t.Proto = p
				if err := topo.Attempt(ctx, t, time.Second); err != nil {
					failN.Add(1)
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					continue
				}
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		fmt.Fprintf(os.Stderr, "fwconn: first failure (%s): %v\n", proto, first)
	}
	return okN.Load(), failN.Load(), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
