// Package compile turns a cluster snapshot (networking.k8s.io/v1
// NetworkPolicies, Pods, Namespaces, Services) and the firewall's
// configuration into the nftables ruleset model. It is pure and
// deterministic: the same inputs in any order give the same Ruleset.
//
// Shape of the output, so that packet-path cost does not grow with the
// number of policies: a verdict map from pod IP to a chain for the pod's
// group (the pods selected by the same set of policies, per direction);
// the group chain jumps to each of its policies' chains and ends in a
// counted drop; a policy chain has at most three rules per policy rule and
// family, each one set lookup — peers as an interval set (every ipBlock
// minus its own excepts, unioned with the selected peer pods' IPs),
// numeric ports as an interval concatenation inet_proto . inet_service,
// named ports resolved per pod as ipv4_addr . inet_proto . inet_service.
// Identical sets are shared.
package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

// Chain names of the fixed skeleton.
const (
	ChainForward     = "forward"
	ChainPostrouting = "postrouting"
	ChainFromCluster = "from_cluster"
	ChainToCluster   = "to_cluster"
	ChainEgress      = "egress"
	ChainIngress     = "ingress"
	ChainNATEgress   = "nat_egress"
)

// Counter comments of the fixed rules.
const (
	CommentDefaultEgress  = "default egress"
	CommentDefaultIngress = "default ingress"
	CommentLoadBalancer   = "loadbalancer ingress"
)

type direction int

const (
	egress direction = iota
	ingress
)

func (d direction) String() string {
	if d == egress {
		return "egress"
	}
	return "ingress"
}

// Compile builds the ruleset. Invalid policies are reported (as
// *cluster.PolicyError) and handled as cluster.Validate describes; every
// other policy still compiles. An invalid configuration yields an empty
// ruleset and its error.
func Compile(s cluster.Snapshot, cfg config.Config) (model.Ruleset, []error) {
	if err := cfg.Validate(); err != nil {
		return model.Ruleset{}, []error{fmt.Errorf("firewall configuration: %w", err)}
	}
	c := newCompiler(s, cfg)
	errs := c.policies(s.Policies)
	c.skeleton()
	for _, d := range []direction{egress, ingress} {
		c.direction(d)
	}
	if cfg.LoadBalancerIngress {
		c.loadBalancers(s.Services)
	}
	c.defaults()
	rs := model.Ruleset{Table: cfg.Table, Owners: c.owners}
	rs.Chains = append(rs.Chains, c.base...)
	rs.Chains = append(rs.Chains, c.groupChains...)
	rs.Chains = append(rs.Chains, c.policyChains...)
	rs.Sets = orderSets(c.sets, rs.Chains)
	return rs, errs
}

// orderSets puts the sets most looked up first, then by name: the kernel
// finds a rule's set by walking the table's sets in the order they were
// created, so this keeps the walks of a large ruleset short.
func orderSets(sets []model.Set, chains []model.Chain) []model.Set {
	uses := make(map[string]int, len(sets))
	for _, c := range chains {
		for _, r := range c.Rules {
			for _, l := range r.Lookups {
				uses[l.Set]++
			}
			if r.Verdict.Map != nil {
				uses[r.Verdict.Map.Set]++
			}
		}
	}
	sort.Slice(sets, func(i, j int) bool {
		if ui, uj := uses[sets[i].Name], uses[sets[j].Name]; ui != uj {
			return ui > uj
		}
		return sets[i].Name < sets[j].Name
	})
	return sets
}

type policy struct {
	ref             model.PolicyRef
	np              *networkingv1.NetworkPolicy
	rulesOK         bool // false: isolates but allows nothing (fail closed)
	ingress, egress bool
	selected        []int // indexes into compiler.pods
}

type compiler struct {
	cfg      config.Config
	pods     []cluster.Pod
	podsByNS map[string][]int
	nsLabels map[string]map[string]string
	pols     []policy

	base, groupChains, policyChains []model.Chain
	// chain indexes into base for the rules added after the skeleton
	egressAt, ingressAt int

	sets     []model.Set
	setByKey map[string]string
	setCount map[string]int
	owners   map[string]model.Owner
	peerMemo map[string][]int
	addrMemo map[string][2]addrRanges
	// namedMemo holds resolved egress named ports (see namedElements).
	namedMemo map[string]*namedSet
	// byAddr indexes the pods by address (see addrIndex).
	byAddr *[2][]podAddr
}

func newCompiler(s cluster.Snapshot, cfg config.Config) *compiler {
	c := &compiler{
		cfg:       cfg,
		pods:      cluster.Pods(s),
		podsByNS:  map[string][]int{},
		nsLabels:  cluster.NamespaceLabels(s),
		setByKey:  map[string]string{},
		setCount:  map[string]int{},
		owners:    map[string]model.Owner{},
		peerMemo:  map[string][]int{},
		addrMemo:  map[string][2]addrRanges{},
		namedMemo: map[string]*namedSet{},
	}
	for i, p := range c.pods {
		c.podsByNS[p.Namespace] = append(c.podsByNS[p.Namespace], i)
	}
	return c
}

// policies sorts, validates and resolves the selected pods of each policy.
func (c *compiler) policies(in []networkingv1.NetworkPolicy) []error {
	idx := make([]int, len(in))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		pa, pb := &in[idx[a]], &in[idx[b]]
		if pa.Namespace != pb.Namespace {
			return pa.Namespace < pb.Namespace
		}
		return pa.Name < pb.Name
	})
	var errs []error
	for _, i := range idx {
		np := &in[i]
		p := policy{ref: model.PolicyRef{Namespace: np.Namespace, Name: np.Name}, np: np, rulesOK: true}
		if err := cluster.Validate(np); err != nil {
			errs = append(errs, err)
			var pe *cluster.PolicyError
			if !errors.As(err, &pe) || !pe.Isolates {
				continue
			}
			p.rulesOK = false
		}
		p.ingress, p.egress = cluster.Types(np)
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil { // Validate caught it; kept for safety
			continue
		}
		for _, pi := range c.podsByNS[np.Namespace] {
			if sel.Matches(labels.Set(c.pods[pi].Labels)) {
				p.selected = append(p.selected, pi)
			}
		}
		c.pols = append(c.pols, p)
	}
	return errs
}

func rule(r model.Rule, v model.VerdictKind) model.Rule {
	r.Verdict = model.Verdict{Kind: v}
	return r
}

// skeleton adds the base chains and the direction split.
func (c *compiler) skeleton() {
	fwd := model.Chain{Name: ChainForward, Hook: &model.Hook{Type: "filter", Hook: "forward", Priority: 0, Policy: model.Accept}}
	fwd.Rules = append(fwd.Rules,
		rule(model.Rule{CtState: model.CtEstablished | model.CtRelated}, model.Accept),
		rule(model.Rule{CtState: model.CtInvalid}, model.Drop))
	from := model.Chain{Name: ChainFromCluster}
	to := model.Chain{Name: ChainToCluster}
	for _, ifc := range c.cfg.ClusterInterfaces {
		fwd.Rules = append(fwd.Rules, model.Rule{Iif: model.IfMatch{Name: ifc}, Verdict: model.Verdict{Kind: model.Jump, Chain: ChainFromCluster}})
		from.Rules = append(from.Rules, rule(model.Rule{Oif: model.IfMatch{Name: ifc}}, model.Return))
		to.Rules = append(to.Rules, rule(model.Rule{Iif: model.IfMatch{Name: ifc}}, model.Return))
	}
	for _, ifc := range c.cfg.ClusterInterfaces {
		fwd.Rules = append(fwd.Rules, model.Rule{Oif: model.IfMatch{Name: ifc}, Verdict: model.Verdict{Kind: model.Jump, Chain: ChainToCluster}})
	}
	from.Rules = append(from.Rules, model.Rule{Verdict: model.Verdict{Kind: model.Goto, Chain: ChainEgress}})
	to.Rules = append(to.Rules, model.Rule{Verdict: model.Verdict{Kind: model.Goto, Chain: ChainIngress}})
	c.base = append(c.base, fwd)
	if nat := c.natChains(); nat != nil {
		c.base = append(c.base, nat...)
	}
	c.base = append(c.base, from, to, model.Chain{Name: ChainEgress}, model.Chain{Name: ChainIngress})
	c.egressAt, c.ingressAt = len(c.base)-2, len(c.base)-1
}

func (c *compiler) natChains() []model.Chain {
	cfg := c.cfg
	var tail []model.Rule
	for _, fam := range []struct {
		f    model.Family
		snat netip.Addr
	}{{model.IPv4, cfg.SNATv4}, {model.IPv6, cfg.SNATv6}} {
		switch {
		case fam.snat.IsValid():
			tail = append(tail, model.Rule{Family: fam.f, Verdict: model.Verdict{Kind: model.SNAT, Addr: fam.snat}})
		case cfg.Masquerade:
			tail = append(tail, model.Rule{Family: fam.f, Verdict: model.Verdict{Kind: model.Masquerade}})
		}
	}
	if len(tail) == 0 {
		return nil
	}
	post := model.Chain{Name: ChainPostrouting, Hook: &model.Hook{Type: "nat", Hook: "postrouting", Priority: 100, Policy: model.Accept}}
	nat := model.Chain{Name: ChainNATEgress}
	for _, ifc := range cfg.ClusterInterfaces {
		post.Rules = append(post.Rules, model.Rule{Iif: model.IfMatch{Name: ifc}, Verdict: model.Verdict{Kind: model.Jump, Chain: ChainNATEgress}})
		nat.Rules = append(nat.Rules, rule(model.Rule{Oif: model.IfMatch{Name: ifc}}, model.Return))
	}
	nat.Rules = append(nat.Rules, tail...)
	return []model.Chain{post, nat}
}

var families = [2]model.Family{model.IPv4, model.IPv6}

func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func famSuffix(f model.Family) string {
	if f == model.IPv4 {
		return "4"
	}
	return "6"
}

// direction builds the groups, their chains, the policy chains and the
// pod verdict maps of one direction.
func (c *compiler) direction(d direction) {
	perPod := make([][]int, len(c.pods))
	for pi, p := range c.pols {
		if (d == egress && !p.egress) || (d == ingress && !p.ingress) {
			continue
		}
		for _, pod := range p.selected {
			perPod[pod] = append(perPod[pod], pi)
		}
	}
	type group struct {
		pols []int
		pods []int
	}
	groups := map[string]*group{}
	var keys []string
	for pod, pols := range perPod {
		if len(pols) == 0 {
			continue
		}
		k := fmt.Sprint(pols)
		g := groups[k]
		if g == nil {
			g = &group{pols: pols}
			groups[k] = g
			keys = append(keys, k)
		}
		g.pods = append(g.pods, pod)
	}
	// keys are in order of each group's first pod: deterministic.
	polChain := map[int]string{}
	var vmap [2][]model.Element
	for gi, k := range keys {
		g := groups[k]
		name := fmt.Sprintf("%s_g%d", d, gi)
		ch := model.Chain{Name: name}
		refs := make([]model.PolicyRef, len(g.pols))
		for i, pi := range g.pols {
			refs[i] = c.pols[pi].ref
			pc, ok := polChain[pi]
			if !ok {
				pc = c.policyChain(d, pi)
				polChain[pi] = pc
			}
			if pc != "" {
				ch.Rules = append(ch.Rules, model.Rule{Verdict: model.Verdict{Kind: model.Jump, Chain: pc}})
			}
		}
		comment := fmt.Sprintf("drop %s g%d", d, gi)
		if c.cfg.LogDrops {
			ch.Rules = append(ch.Rules, c.logRule(comment))
		}
		ch.Rules = append(ch.Rules, rule(model.Rule{Counter: true, Comment: comment}, model.Drop))
		c.owners[comment] = model.Owner{Accept: false, Policies: refs}
		c.groupChains = append(c.groupChains, ch)
		for _, pod := range g.pods {
			for _, ip := range c.pods[pod].IPs {
				vmap[famIndex(ip)] = append(vmap[famIndex(ip)], model.Element{
					Addr:    model.AddrRange{From: ip, To: ip},
					Verdict: model.Verdict{Kind: model.Goto, Chain: name},
				})
			}
		}
	}
	at := c.egressAt
	field := model.SrcAddr
	if d == ingress {
		at, field = c.ingressAt, model.DstAddr
	}
	for fi, f := range families {
		if len(vmap[fi]) == 0 {
			continue
		}
		els := vmap[fi]
		sort.Slice(els, func(i, j int) bool { return els[i].Addr.From.Less(els[j].Addr.From) })
		name := fmt.Sprintf("%s_pods%s", d, famSuffix(f))
		c.sets = append(c.sets, model.Set{Name: name, Family: f, Key: []model.KeyKind{model.KeyAddr}, Verdicts: true, Elements: els})
		c.base[at].Rules = append(c.base[at].Rules, model.Rule{Family: f,
			Verdict: model.Verdict{Kind: model.VMap, Map: &model.Lookup{Fields: []model.Field{field}, Set: name}}})
	}
}

func (c *compiler) logRule(what string) model.Rule {
	return model.Rule{Log: &model.Log{Prefix: "anvil " + what + ": ", Rate: c.cfg.LogRate, Burst: c.cfg.LogBurst}}
}

// policyChain builds the chain of one policy's rules in direction d and
// returns its name, or "" when the policy allows nothing in d.
func (c *compiler) policyChain(d direction, pi int) string {
	p := &c.pols[pi]
	if !p.rulesOK {
		return ""
	}
	comment := policyComment(p.ref)
	c.owners[comment] = model.Owner{Accept: true, Policies: []model.PolicyRef{p.ref}}
	ch := model.Chain{Name: chainName(d, p.ref)}
	if d == egress {
		for _, r := range p.np.Spec.Egress {
			ch.Rules = append(ch.Rules, c.policyRule(d, p, r.To, r.Ports, comment)...)
		}
	} else {
		for _, r := range p.np.Spec.Ingress {
			ch.Rules = append(ch.Rules, c.policyRule(d, p, r.From, r.Ports, comment)...)
		}
	}
	if len(ch.Rules) == 0 {
		return ""
	}
	c.policyChains = append(c.policyChains, ch)
	return ch.Name
}

func protoOf(p *corev1.Protocol) uint8 {
	if p == nil {
		return model.ProtoTCP
	}
	switch *p {
	case corev1.ProtocolUDP:
		return model.ProtoUDP
	case corev1.ProtocolSCTP:
		return model.ProtoSCTP
	}
	return model.ProtoTCP
}

func sortElements(els []model.Element) {
	sort.Slice(els, func(i, j int) bool {
		a, b := els[i], els[j]
		if a.Addr.From != b.Addr.From {
			return a.Addr.From.Less(b.Addr.From)
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port.From < b.Port.From
	})
}

func (rs addrRanges) contains(a netip.Addr) bool {
	i := sort.Search(len(rs), func(i int) bool { return !rs[i].To.Less(a) })
	return i < len(rs) && !a.Less(rs[i].From)
}

// peerAddrs is the addresses of a selector peer's pods per family,
// normalized and memoised (shared: not to be modified).
func (c *compiler) peerAddrs(ns string, peer networkingv1.NetworkPolicyPeer) [2]addrRanges {
	pods, key := c.peerPods(ns, peer)
	if got, ok := c.addrMemo[key]; ok {
		return got
	}
	var out [2]addrRanges
	for _, pod := range pods {
		for _, ip := range c.pods[pod].IPs {
			out[famIndex(ip)] = append(out[famIndex(ip)], model.AddrRange{From: ip, To: ip})
		}
	}
	for i := range out {
		out[i] = out[i].normalize()
	}
	c.addrMemo[key] = out
	return out
}

// peerPods resolves a selector peer to pod indexes, memoised per
// namespace and selectors; key names the memo entry.
func (c *compiler) peerPods(ns string, peer networkingv1.NetworkPolicyPeer) (pods []int, key string) {
	var nsSel, podSel labels.Selector
	key = ns
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			return nil, "invalid"
		}
		nsSel, key = s, "ns:"+s.String()
	}
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			return nil, "invalid"
		}
		podSel = s
		key += "|pod:" + s.String()
	} else {
		key += "|all"
	}
	if got, ok := c.peerMemo[key]; ok {
		return got, key
	}
	var out []int
	for i, pod := range c.pods {
		if nsSel == nil {
			if pod.Namespace != ns {
				continue
			}
		} else if !nsSel.Matches(labels.Set(c.nsLabels[pod.Namespace])) {
			continue
		}
		if podSel != nil && !podSel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, i)
	}
	c.peerMemo[key] = out
	return out, key
}

func (c *compiler) addrSet(f model.Family, rs addrRanges) string {
	els := make([]model.Element, len(rs))
	for i, r := range rs {
		els[i] = model.Element{Addr: r}
	}
	return c.internSet(model.Set{Family: f, Key: []model.KeyKind{model.KeyAddr}, Interval: true, Elements: els}, "addr"+famSuffix(f))
}

func (c *compiler) portSet(ps []portRange) string {
	els := make([]model.Element, len(ps))
	for i, p := range ps {
		els[i] = model.Element{Proto: p.proto, Port: model.PortRange{From: p.from, To: p.to}}
	}
	return c.internSet(model.Set{Key: []model.KeyKind{model.KeyProto, model.KeyService}, Interval: true, Elements: els}, "ports")
}

// internSet names a set by its prefix and a counter, sharing one set
// among all lookups of identical content.
func (c *compiler) internSet(s model.Set, prefix string) string {
	k := make([]byte, 0, 64+len(s.Elements)*37)
	k = fmt.Appendf(k, "%s|%d|%v|%v|", prefix, s.Family, s.Key, s.Interval)
	for _, e := range s.Elements {
		from, to := e.Addr.From.As16(), e.Addr.To.As16()
		k = append(k, from[:]...)
		k = append(k, to[:]...)
		k = append(k, e.Proto, byte(e.Port.From>>8), byte(e.Port.From), byte(e.Port.To>>8), byte(e.Port.To))
	}
	if name, ok := c.setByKey[string(k)]; ok {
		return name
	}
	s.Name = prefix + "_" + strconv.Itoa(c.setCount[prefix])
	c.setCount[prefix]++
	c.setByKey[string(k)] = s.Name
	c.sets = append(c.sets, s)
	return s.Name
}

// loadBalancers accepts ingress to LoadBalancer IPs on their ports.
func (c *compiler) loadBalancers(svcs []corev1.Service) {
	var els [2][]model.Element
	seen := map[model.Element]bool{}
	for _, svc := range svcs {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			for _, sp := range svc.Spec.Ports {
				if sp.Port < 1 || sp.Port > 65535 {
					continue
				}
				proto := sp.Protocol
				e := model.Element{Addr: model.AddrRange{From: ip, To: ip}, Proto: protoOf(&proto), Port: model.PortRange{From: uint16(sp.Port), To: uint16(sp.Port)}}
				if !seen[e] {
					seen[e] = true
					els[famIndex(ip)] = append(els[famIndex(ip)], e)
				}
			}
		}
	}
	for fi, f := range families {
		if len(els[fi]) == 0 {
			continue
		}
		sortElements(els[fi])
		name := "lb" + famSuffix(f)
		c.sets = append(c.sets, model.Set{Name: name, Family: f, Key: []model.KeyKind{model.KeyAddr, model.KeyProto, model.KeyService}, Elements: els[fi]})
		c.base[c.ingressAt].Rules = append(c.base[c.ingressAt].Rules, model.Rule{Family: f, Counter: true, Comment: CommentLoadBalancer,
			Lookups: []model.Lookup{{Fields: []model.Field{model.DstAddr, model.L4Proto, model.DstPort}, Set: name}},
			Verdict: model.Verdict{Kind: model.Accept}})
		c.owners[CommentLoadBalancer] = model.Owner{Accept: true}
	}
}

// defaults ends the egress and ingress chains with the configured verdict.
func (c *compiler) defaults() {
	for _, x := range []struct {
		at      int
		v       config.Verdict
		comment string
	}{{c.egressAt, c.cfg.DefaultEgress, CommentDefaultEgress}, {c.ingressAt, c.cfg.DefaultIngress, CommentDefaultIngress}} {
		kind := model.Accept
		if x.v == config.Deny {
			kind = model.Drop
			if c.cfg.LogDrops {
				c.base[x.at].Rules = append(c.base[x.at].Rules, c.logRule(x.comment))
			}
		}
		c.base[x.at].Rules = append(c.base[x.at].Rules, rule(model.Rule{Counter: true, Comment: x.comment}, kind))
		c.owners[x.comment] = model.Owner{Accept: kind == model.Accept}
	}
}

// nft limits: names to 255 bytes, comments to 128.
const (
	maxName    = 200
	maxComment = 128
)

func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:max-9] + "~" + hex.EncodeToString(sum[:4])
}

func chainName(d direction, p model.PolicyRef) string {
	pre := "eg_"
	if d == ingress {
		pre = "in_"
	}
	// Namespaces and names never contain "_", so the name is unambiguous.
	return shorten(pre+p.Namespace+"_"+p.Name, maxName)
}

func policyComment(p model.PolicyRef) string { return shorten(p.String(), maxComment) }
