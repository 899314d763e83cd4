package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Interface names in the fw namespace, as the firewall's configuration
// and model.Packet name them.
const (
	ClusterIf = "cluster0"
	UplinkIf  = "uplink0"
	// peerIf is the veth end in the cluster and outside namespaces.
	peerIf = "eth0"
)

// Pod is one pod's addresses in the cluster namespace.
type Pod struct{ V4, V6 netip.Addr }

// Addrs returns the pod's addresses, v4 first.
func (p Pod) Addrs() []netip.Addr { return []netip.Addr{p.V4, p.V6} }

// Plan is the address plan of a topology. Every address listed here is
// configured in its namespace and served on every port of Ports.
type Plan struct {
	// Pods are addresses in the cluster namespace that tests hand out as
	// pod IPs (status.podIPs).
	Pods []Pod
	// Node is a cluster-namespace address that is no pod's (the node).
	Node Pod
	// LB is a cluster-namespace address for Services of type
	// LoadBalancer (status.loadBalancer.ingress), routed by fw via Node.
	LB Pod
	// Outside are the outside namespace's addresses, v4 and v6: two on
	// the uplink subnet and two on a subnet routed by fw.
	Outside []netip.Addr
	// Ports are the ports every server address listens on, for TCP,
	// UDP and SCTP alike.
	Ports []uint16
	// Gateways are fw's addresses on cluster0 and uplink0.
	ClusterGW, UplinkGW Pod
	// Uplink is the outside namespace's address fw routes the outside
	// subnets through.
	Uplink Pod
}

// DefaultPlan is the plan New uses.
func DefaultPlan() Plan {
	a := netip.MustParseAddr
	return Plan{
		Pods: []Pod{
			{a("10.244.1.10"), a("fd00:10:244:1::10")},
			{a("10.244.1.11"), a("fd00:10:244:1::11")},
			{a("10.244.1.12"), a("fd00:10:244:1::12")},
			{a("10.244.1.13"), a("fd00:10:244:1::13")},
		},
		Node:      Pod{a("10.244.1.2"), a("fd00:10:244:1::2")},
		LB:        Pod{a("10.244.2.100"), a("fd00:10:244:2::100")},
		ClusterGW: Pod{a("10.244.1.1"), a("fd00:10:244:1::1")},
		UplinkGW:  Pod{a("192.0.2.1"), a("2001:db8:1::1")},
		Uplink:    Pod{a("192.0.2.2"), a("2001:db8:1::2")},
		Outside: []netip.Addr{
			a("192.0.2.2"), a("192.0.2.130"), a("198.51.100.10"), a("198.51.100.20"),
			a("2001:db8:1::2"), a("2001:db8:1::8002"), a("2001:db8:2::10"), a("2001:db8:2::20"),
		},
		Ports: []uint16{80, 443, 7999, 8000, 8005, 8009, 8010, 9000},
	}
}

// Sources are the cluster namespace's addresses that open connections:
// the pods' and the node's.
func (p Plan) Sources() []netip.Addr {
	var out []netip.Addr
	for _, pod := range p.Pods {
		out = append(out, pod.Addrs()...)
	}
	return append(out, p.Node.Addrs()...)
}

// ClusterAddrs are every address of the cluster namespace that probes
// use: the Sources and the load balancer's.
func (p Plan) ClusterAddrs() []netip.Addr {
	return append(p.Sources(), p.LB.Addrs()...)
}

// NS is a named network namespace this package created.
type NS struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle
	// socket requests are served by one goroutine locked to a thread in
	// the namespace.
	req  chan socketReq
	done chan struct{}
}

type socketReq struct {
	domain, typ, proto int
	reply              chan socketRes
}

type socketRes struct {
	fd  int
	err error
}

// Fd is the namespace's file descriptor (for apply.WithNetNS and
// nftables.WithNetNSFd). It stays valid until the topology is closed.
func (n *NS) Fd() int { return int(n.handle) }

// Netlink is a netlink handle working in the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Socket creates a socket in the namespace; the descriptor can then be
// used from any thread.
func (n *NS) Socket(domain, typ, proto int) (int, error) {
	r := socketReq{domain: domain, typ: typ, proto: proto, reply: make(chan socketRes, 1)}
	select {
	case n.req <- r:
	case <-n.done:
		return -1, fmt.Errorf("socket in netns %s: namespace closed", n.Name)
	}
	res := <-r.reply
	if res.err != nil {
		return -1, fmt.Errorf("socket(%d, %d, %d) in netns %s: %w", domain, typ, proto, n.Name, res.err)
	}
	return res.fd, nil
}

// Do runs fn on a thread in the namespace. The thread is discarded
// afterwards, so fn may change per-thread state freely.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Sysctl writes /proc/sys/<key> (key with slashes) as seen from the
// namespace.
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		p := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in netns %s: %w", key, value, n.Name, err)
		}
		return nil
	})
}

// ReadSysctl reads /proc/sys/<key> as seen from the namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	var v []byte
	err := n.Do(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in netns %s: %w", key, n.Name, err)
	}
	return string(v), nil
}

func newNS(name string) (*NS, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves with the goroutine
		h, err := netns.NewNamed(name)
		c <- res{h, err}
	}()
	r := <-c
	if r.err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, r.err)
	}
	n := &NS{Name: name, handle: r.h, req: make(chan socketReq), done: make(chan struct{})}
	nl, err := netlink.NewHandleAt(r.h)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("netlink handle in netns %s: %w", name, err)
	}
	n.nl = nl
	started := make(chan error, 1)
	go n.serveSockets(started)
	if err := <-started; err != nil {
		close(n.done)
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *NS) serveSockets(started chan<- error) {
	runtime.LockOSThread() // never unlocked
	if err := netns.Set(n.handle); err != nil {
		started <- fmt.Errorf("setns %s: %w", n.Name, err)
		return
	}
	started <- nil
	for {
		select {
		case <-n.done:
			return
		case r := <-n.req:
			fd, err := unix.Socket(r.domain, r.typ|unix.SOCK_CLOEXEC, r.proto)
			r.reply <- socketRes{fd, err}
		}
	}
}

func (n *NS) close() error {
	if n.nl != nil {
		n.nl.Close()
	}
	var errs []error
	if err := n.handle.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close netns %s: %w", n.Name, err))
	}
	if err := netns.DeleteNamed(n.Name); err != nil {
		errs = append(errs, fmt.Errorf("delete netns %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

// namePrefix starts the names of the namespaces New creates:
// anvfw-PID-RANDOM-ROLE.
const namePrefix = "anvfw-"

// removeStale deletes namespaces that New created in processes that have
// since died without closing them (a test binary killed by its timeout).
func removeStale() {
	entries, _ := os.ReadDir(bindMountDir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		netns.DeleteNamed(e.Name())
	}
}

// bindMountDir is where named network namespaces live (as ip-netns(8)
// and netns.NewNamed keep them).
const bindMountDir = "/run/netns"

// Topology is the three namespaces, their links, addresses and routes,
// and the servers in the cluster and outside namespaces.
type Topology struct {
	Plan                 Plan
	Cluster, FW, Outside *NS
	// SCTP says how SCTP is probed: "kernel" (SCTP sockets) or "raw"
	// (the kernel has no SCTP: INIT and INIT-ACK chunks are built and
	// answered over raw IP sockets, so the firewall still sees a real
	// SCTP association start).
	SCTP string

	mu      sync.Mutex
	ports   map[Probe]uint32 // next source port of each probe tuple
	seen    map[flowKey]bool // first packets the servers received
	closers []func() error
	wg      sync.WaitGroup
}

// New creates the namespaces (named prefix-cluster, prefix-fw and
// prefix-outside, prefix unique per call), wires them as DefaultPlan says
// and starts the servers. Close deletes everything.
func New() (t *Topology, err error) {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("random name: %w", err)
	}
	removeStale()
	prefix := fmt.Sprintf("%s%d-%s", namePrefix, os.Getpid(), hex.EncodeToString(rnd[:]))
	t = &Topology{Plan: DefaultPlan()}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	for _, x := range []struct {
		p    **NS
		role string
	}{{&t.Cluster, "cluster"}, {&t.FW, "fw"}, {&t.Outside, "outside"}} {
		n, err := newNS(prefix + "-" + x.role)
		if err != nil {
			return nil, err
		}
		*x.p = n
	}
	if err := t.wire(); err != nil {
		return nil, err
	}
	if err := t.startServers(); err != nil {
		return nil, err
	}
	return t, nil
}

// Close stops the servers and deletes the namespaces (which removes their
// links, routes and nftables tables).
func (t *Topology) Close() error {
	t.mu.Lock()
	closers := t.closers
	t.closers = nil
	t.mu.Unlock()
	var errs []error
	for _, c := range closers {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	t.wg.Wait()
	for _, n := range []*NS{t.Cluster, t.FW, t.Outside} {
		if n == nil {
			continue
		}
		close(n.done)
		if err := n.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t *Topology) onClose(f func() error) {
	t.mu.Lock()
	t.closers = append(t.closers, f)
	t.mu.Unlock()
}

func host(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func onLink(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

func prefix(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// wire creates the veths, addresses (without DAD), routes and forwarding.
func (t *Topology) wire() error {
	for _, n := range []*NS{t.Cluster, t.FW, t.Outside} {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/all/accept_dad", "0"},
			{"net/ipv6/conf/default/accept_dad", "0"},
			{"net/core/somaxconn", fmt.Sprint(listenBacklog)},
			// Ping sockets for the ICMP probes (every group may open one).
			{"net/ipv4/ping_group_range", "0 2147483647"},
		} {
			if err := n.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		lo, err := n.nl.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("lo in netns %s: %w", n.Name, err)
		}
		if err := n.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up in netns %s: %w", n.Name, err)
		}
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
	} {
		if err := t.FW.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, v := range []struct {
		name string
		peer *NS
	}{{ClusterIf, t.Cluster}, {UplinkIf, t.Outside}} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: peerIf, PeerNamespace: netlink.NsFd(v.peer.Fd())}
		if err := t.FW.nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s) in netns %s: %w", v.name, peerIf, v.peer.Name, t.FW.Name, err)
		}
	}
	p := t.Plan
	type addrs struct {
		ns    *NS
		link  string
		nets  []*net.IPNet
		route []netlink.Route
	}
	var clusterNets []*net.IPNet
	for _, pod := range append(append([]Pod{}, p.Pods...), p.Node) {
		clusterNets = append(clusterNets, onLink(pod.V4, 24), onLink(pod.V6, 64))
	}
	clusterNets = append(clusterNets, host(p.LB.V4), host(p.LB.V6))
	var outsideNets []*net.IPNet
	for _, a := range p.Outside {
		if onUplink := netip.MustParsePrefix("192.0.2.0/24").Contains(a) || netip.MustParsePrefix("2001:db8:1::/64").Contains(a); onUplink {
			bits := 24
			if a.Is6() {
				bits = 64
			}
			outsideNets = append(outsideNets, onLink(a, bits))
		} else {
			outsideNets = append(outsideNets, host(a))
		}
	}
	gw := func(a netip.Addr) net.IP { return a.AsSlice() }
	plan := []addrs{
		{t.Cluster, peerIf, clusterNets, []netlink.Route{
			{Dst: prefix("0.0.0.0/0"), Gw: gw(p.ClusterGW.V4)},
			{Dst: prefix("::/0"), Gw: gw(p.ClusterGW.V6)},
		}},
		{t.FW, ClusterIf, []*net.IPNet{onLink(p.ClusterGW.V4, 24), onLink(p.ClusterGW.V6, 64)}, []netlink.Route{
			{Dst: prefix("10.244.2.0/24"), Gw: gw(p.Node.V4)},
			{Dst: prefix("fd00:10:244:2::/64"), Gw: gw(p.Node.V6)},
		}},
		{t.FW, UplinkIf, []*net.IPNet{onLink(p.UplinkGW.V4, 24), onLink(p.UplinkGW.V6, 64)}, []netlink.Route{
			{Dst: prefix("198.51.100.0/24"), Gw: gw(p.Uplink.V4)},
			{Dst: prefix("2001:db8:2::/64"), Gw: gw(p.Uplink.V6)},
		}},
		{t.Outside, peerIf, outsideNets, []netlink.Route{
			{Dst: prefix("10.244.0.0/16"), Gw: gw(p.UplinkGW.V4)},
			{Dst: prefix("fd00:10:244::/48"), Gw: gw(p.UplinkGW.V6)},
		}},
	}
	for _, a := range plan {
		link, err := a.ns.nl.LinkByName(a.link)
		if err != nil {
			return fmt.Errorf("link %s in netns %s: %w", a.link, a.ns.Name, err)
		}
		for _, ipn := range a.nets {
			if err := a.ns.nl.AddrAdd(link, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
				return fmt.Errorf("add address %s to %s in netns %s: %w", ipn, a.link, a.ns.Name, err)
			}
		}
		if err := a.ns.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", a.link, a.ns.Name, err)
		}
	}
	for _, a := range plan {
		if err := waitUp(a.ns, a.link); err != nil {
			return err
		}
	}
	for _, a := range plan {
		link, err := a.ns.nl.LinkByName(a.link)
		if err != nil {
			return fmt.Errorf("link %s in netns %s: %w", a.link, a.ns.Name, err)
		}
		for _, r := range a.route {
			r.LinkIndex = link.Attrs().Index
			if err := a.ns.nl.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route %s via %s dev %s in netns %s: %w", r.Dst, r.Gw, a.link, a.ns.Name, err)
			}
		}
	}
	return nil
}

// waitUp waits until the link's operational state is up. Until the
// kernel's link watcher has run (up to a second after the carrier came
// up) the device has no queueing discipline and drops what is sent.
func waitUp(ns *NS, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := ns.nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s in netns %s: %w", name, ns.Name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s in netns %s: operational state %s after 5s, want up", name, ns.Name, link.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nsOf returns the namespace that owns a probe address.
func (t *Topology) nsOf(a netip.Addr) (*NS, error) {
	for _, c := range t.Plan.ClusterAddrs() {
		if c == a {
			return t.Cluster, nil
		}
	}
	for _, o := range t.Plan.Outside {
		if o == a {
			return t.Outside, nil
		}
	}
	return nil, fmt.Errorf("address %s is in no namespace of the topology", a)
}

// sourcePort hands out a fresh source port for each probe of a
// (protocol, source, destination, port) tuple, so that no probe reuses the
// 5-tuple of an earlier connection that conntrack might still remember
// (it would be judged established, not new) until 50,000 probes of the
// same tuple have been made.
func (t *Topology) sourcePort(p Probe) uint16 {
	const lo, span = 10000, 50000
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ports == nil {
		t.ports = map[Probe]uint32{}
	}
	n := t.ports[p]
	t.ports[p] = n + 1
	return uint16(lo + n%span)
}
