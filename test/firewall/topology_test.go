//go:build linux

package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/firewall/model"
)

// Probe timing: a dropped packet costs the timeout (twice: a block is
// confirmed by a second attempt), so it is kept short and probes run
// many at once.
const (
	probeTimeout  = 250 * time.Millisecond
	probeParallel = 96
	// recheckTimeout is for probes whose block is in doubt.
	recheckTimeout = time.Second
)

func newTopology(t *testing.T) *Topology {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	start := time.Now()
	topo, err := New()
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		start := time.Now()
		defer func() { t.Logf("topology closed in %v", time.Since(start).Round(time.Millisecond)) }()
		if err := topo.Close(); err != nil {
			t.Errorf("close topology: %v", err)
		}
		for _, n := range []*NS{topo.Cluster, topo.FW, topo.Outside} {
			if _, err := os.Stat("/run/netns/" + n.Name); !os.IsNotExist(err) {
				t.Errorf("netns %s still exists after Close (stat: %v)", n.Name, err)
			}
		}
	})
	t.Logf("topology %s/%s/%s up in %v, SCTP probes: %s", topo.Cluster.Name, topo.FW.Name, topo.Outside.Name, time.Since(start).Round(time.Millisecond), topo.SCTP)
	return topo
}

// nft runs nft(8) in the namespace with script on stdin.
func nft(t *testing.T, ns *NS, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s nft %s: %v\n%s\nscript:\n%s", ns.Name, strings.Join(args, " "), err, out, script)
	}
	return string(out)
}

func egress(topo *Topology, ports []uint16, protos []uint8) []Probe {
	return Matrix(topo.Plan.Sources(), topo.Plan.Outside, ports, protos)
}

func ingress(topo *Topology, ports []uint16, protos []uint8) []Probe {
	return Matrix(topo.Plan.Outside, topo.Plan.ClusterAddrs(), ports, protos)
}

func TestTopologyNoFirewall(t *testing.T) {
	topo := newTopology(t)
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		v, err := topo.FW.ReadSysctl(k)
		if err != nil || strings.TrimSpace(v) != "1" {
			t.Errorf("fw %s = %q, %v; want 1", k, v, err)
		}
	}
	if out := nft(t, topo.FW, "", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("fresh fw namespace has a ruleset:\n%s", out)
	}
	probes := append(egress(topo, topo.Plan.Ports, AllProtos()), ingress(topo, topo.Plan.Ports, AllProtos())...)
	start := time.Now()
	res := topo.Run(context.Background(), probes, probeTimeout, probeParallel)
	t.Logf("%d probes in %v", len(res), time.Since(start).Round(time.Millisecond))
	for _, r := range res {
		if !r.Passed || r.Err != nil {
			t.Errorf("%s: passed=%v err=%v, want passed (no firewall)", r.Probe, r.Passed, r.Err)
		}
	}
}

// TestProbesDetectDrops loads a hand-written table with nft -f and checks
// that exactly the dropped probes fail, in each direction and protocol,
// and that an unserved port is reported as an error, not as a drop.
func TestProbesDetectDrops(t *testing.T) {
	topo := newTopology(t)
	p := topo.Plan
	pod, out := p.Pods[0], p.Outside
	nft(t, topo.FW, fmt.Sprintf(`table inet handwritten {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		ct state invalid drop
		iifname "cluster0" oifname "uplink0" ip saddr %s ip daddr %s tcp dport 80 drop
		iifname "cluster0" oifname "uplink0" ip6 saddr %s udp dport 8000 drop
		iifname "uplink0" oifname "cluster0" ip daddr %s meta l4proto sctp drop
		iifname "uplink0" oifname "cluster0" ip6 saddr %s ip6 daddr %s th dport 443 drop
		iifname "cluster0" oifname "uplink0" ip saddr %s icmp type echo-request drop
		iifname "uplink0" oifname "cluster0" ip6 daddr %s meta l4proto ipv6-icmp drop
	}
}
`, pod.V4, out[0], pod.V6, pod.V4, out[6], p.Pods[1].V6, p.Pods[1].V4, p.Pods[2].V6), "-f", "-")
	dropped := func(pr Probe) bool {
		switch {
		case pr.Src == pod.V4 && pr.Dst == out[0] && pr.Proto == model.ProtoTCP && pr.Port == 80:
		case pr.Src == pod.V6 && pr.Proto == model.ProtoUDP && pr.Port == 8000 && !pr.Dst.Is4():
		case pr.Dst == pod.V4 && pr.Proto == model.ProtoSCTP:
		case pr.Src == out[6] && pr.Dst == p.Pods[1].V6 && pr.Port == 443:
		case pr.Src == p.Pods[1].V4 && pr.Proto == ProtoICMP:
		case pr.Dst == p.Pods[2].V6 && pr.Proto == ProtoICMPv6:
		default:
			return false
		}
		return true
	}
	ports := []uint16{80, 443, 8000}
	probes := append(egress(topo, ports, AllProtos()), ingress(topo, ports, AllProtos())...)
	start := time.Now()
	res := topo.Run(context.Background(), probes, probeTimeout, probeParallel)
	t.Logf("%d probes in %v", len(res), time.Since(start).Round(time.Millisecond))
	drops := 0
	for _, r := range res {
		want := !dropped(r.Probe)
		if !want {
			drops++
		}
		if r.Err != nil || r.Passed != want {
			t.Errorf("%s: passed=%v err=%v, want passed=%v", r.Probe, r.Passed, r.Err, want)
		}
	}
	if drops < 20 {
		t.Fatalf("only %d probes expected to be dropped: the test proves little", drops)
	}
	// A port nobody serves is refused (RST or ICMP), which is an error,
	// never mistaken for a drop.
	for _, proto := range []uint8{model.ProtoTCP, model.ProtoUDP} {
		r := topo.Check(context.Background(), Probe{Src: p.Pods[2].V4, Dst: out[1], Proto: proto, Port: 9999}, probeTimeout)
		if r.Passed || r.Err == nil {
			t.Errorf("%s to an unserved port: passed=%v err=%v, want an error", r.Probe, r.Passed, r.Err)
		}
	}
}

// TestSCTPRawChecksum shows that the raw SCTP probes are real SCTP to
// conntrack: with a corrupted checksum the INIT is invalid and dropped by
// "ct state invalid drop", with the right one it passes.
func TestSCTPRawChecksum(t *testing.T) {
	topo := newTopology(t)
	if topo.SCTP != "raw" {
		t.Skip("kernel SCTP sockets in use")
	}
	nft(t, topo.FW, `table inet handwritten {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ct state invalid drop
	}
}
`, "-f", "-")
	for _, dst := range []netip.Addr{topo.Plan.Outside[0], topo.Plan.Outside[4]} {
		src := topo.Plan.Pods[0].V4
		if dst.Is6() {
			src = topo.Plan.Pods[0].V6
		}
		pr := Probe{Src: src, Dst: dst, Proto: model.ProtoSCTP, Port: 80}
		if err := topo.sctpRawInit(topo.Cluster, pr, topo.sourcePort(pr), probeTimeout, false); err != nil {
			t.Errorf("%s with a good checksum: %v", pr, err)
		}
		if err := topo.sctpRawInit(topo.Cluster, pr, topo.sourcePort(pr), probeTimeout, true); err != ErrBlocked {
			t.Errorf("%s with a bad checksum: %v, want ErrBlocked (conntrack: invalid)", pr, err)
		}
	}
}
