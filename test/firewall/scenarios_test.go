//go:build linux

package firewall

import (
	"testing"

	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/model"
)

const (
	tcp  = model.ProtoTCP
	udp  = model.ProtoUDP
	sctp = model.ProtoSCTP
)

// scenario follows an upstream Kubernetes network-policy e2e case
// (test/e2e/network/netpol) as far as it applies to traffic crossing the
// firewall.
type scenario struct {
	name     string
	cfg      func(*config.Config)
	policies string // YAML
	wantErrs int    // invalid policies
	ports    []uint16
	// expect are hand-derived verdicts, checked besides the oracle's.
	expect func(x addrs) []expectation
}

// addrs names the plan's addresses for expectations. P are the pods.
// O are the outside addresses as v4/v6 pairs: O[0] = 192.0.2.2 /
// 2001:db8:1::2, O[1] = 192.0.2.130 / 2001:db8:1::8002 (pod ext-1),
// O[2] = 198.51.100.10 / 2001:db8:2::10 (pod ext-0), O[3] =
// 198.51.100.20 / 2001:db8:2::20.
type addrs struct {
	P, O     []Pod
	Node, LB Pod
}

func planAddrs(p Plan) addrs {
	x := addrs{P: p.Pods, Node: p.Node, LB: p.LB, O: make([]Pod, 4)}
	for i := range x.O {
		x.O[i] = Pod{p.Outside[i], p.Outside[i+4]}
	}
	return x
}

func e(proto uint8, src, dst Pod, port uint16, v6, pass bool) expectation {
	s, d := src.V4, dst.V4
	if v6 {
		s, d = src.V6, dst.V6
	}
	return expectation{Probe{Src: s, Dst: d, Proto: proto, Port: port}, pass}
}

// both returns the expectation for v4 and v6.
func both(proto uint8, src, dst Pod, port uint16, pass bool) []expectation {
	return []expectation{e(proto, src, dst, port, false, pass), e(proto, src, dst, port, true, pass)}
}

func cat(xs ...[]expectation) []expectation {
	var out []expectation
	for _, x := range xs {
		out = append(out, x...)
	}
	return out
}

func scenarios() []scenario {
	return []scenario{
		{
			name: "default allow",
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[0], O[0], 80, true), both(udp, O[3], P[3], 8000, true), both(sctp, P[2], O[2], 443, true))
			},
		},
		{
			// "should enforce egress policy allowing traffic to a server in a
			// different namespace based on ipBlock" with a cluster-wide
			// default deny for egress.
			name: "default-deny egress config",
			cfg:  func(c *config.Config) { c.DefaultEgress = config.Deny },
			policies: `
metadata: {name: web-out, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.0.2.0/24}}]
    ports: [{port: 80}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(
					[]expectation{e(tcp, P[0], O[0], 80, false, true), e(tcp, P[1], O[1], 80, false, true)},
					[]expectation{e(tcp, P[0], O[0], 80, true, false)}, // a v4 cidr never matches v6
					both(tcp, P[0], O[2], 80, false), both(udp, P[0], O[0], 80, false),
					both(tcp, P[2], O[0], 80, false),   // not selected: default deny
					both(tcp, x.Node, O[0], 80, false), // not a pod: default deny
					both(tcp, O[0], P[0], 80, true),    // ingress untouched
				)
			},
		},
		{
			name: "default-deny ingress config",
			cfg:  func(c *config.Config) { c.DefaultIngress = config.Deny },
			policies: `
metadata: {name: api-in, namespace: backend}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 198.51.100.0/24}}, {ipBlock: {cidr: "2001:db8:2::/64"}}]
    ports: [{port: 443}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, O[2], P[2], 443, true), both(tcp, O[2], P[2], 80, false), both(tcp, O[0], P[2], 443, false),
					both(tcp, O[2], P[0], 443, false), both(tcp, P[0], O[0], 80, true))
			},
		},
		{
			// "should support a 'default-deny-all' policy" for both types.
			name: "deny-all ingress and egress policies",
			policies: `
metadata: {name: deny-all, namespace: frontend}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[0], O[0], 80, false), both(udp, P[1], O[3], 8000, false), both(sctp, O[2], P[0], 8000, false),
					both(tcp, O[1], P[1], 443, false), both(tcp, P[2], O[0], 80, true), both(tcp, O[0], P[3], 80, true))
			},
		},
		{
			// "should allow egress access to server in CIDR block" and
			// "should enforce except clause while egress access to server in
			// CIDR block", v4 and v6, both directions.
			name: "ipBlock with except",
			policies: `
metadata: {name: cidr, namespace: backend}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress, Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
    - ipBlock: {cidr: "2001:db8:1::/64", except: ["2001:db8:1::8000/113"]}
  ingress:
  - from:
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.20/32]}
    - ipBlock: {cidr: "2001:db8:2::/64", except: ["2001:db8:2::20/128"]}
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[2], O[0], 80, true), both(tcp, P[2], O[1], 80, false), both(udp, P[2], O[2], 8000, false),
					both(tcp, O[2], P[2], 443, true), both(tcp, O[3], P[2], 443, false), both(sctp, O[0], P[2], 80, false),
					both(tcp, P[0], O[1], 80, true))
			},
		},
		{
			// "should ensure an IP overlapping both IPBlock.CIDR and
			// IPBlock.Except is allowed": excepts are never merged across
			// peers.
			name: "except of one peer inside another peer",
			policies: `
metadata: {name: overlap, namespace: backend}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
    - ipBlock: {cidr: 192.0.2.128/26}
    - ipBlock: {cidr: "2001:db8:1::/64", except: ["2001:db8:1::8000/113"]}
    - ipBlock: {cidr: "2001:db8:1::8000/120"}
  ingress:
  - from:
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.0/27]}
    - ipBlock: {cidr: 198.51.100.16/28}
    - ipBlock: {cidr: "2001:db8:2::/64", except: ["2001:db8:2::/123"]}
    - ipBlock: {cidr: "2001:db8:2::10/124", except: ["2001:db8:2::10/126"]}
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[2], O[1], 80, true), both(tcp, P[2], O[0], 80, true), both(tcp, P[2], O[2], 80, false),
					both(tcp, O[3], P[2], 80, true), both(tcp, O[2], P[2], 80, false))
			},
		},
		{
			// "should enforce policy to allow ingress traffic from pods in all
			// namespaces ... port range (endPort)".
			name:  "port ranges with endPort",
			ports: []uint16{80, 443, 7999, 8000, 8005, 8009, 8010},
			policies: `
metadata: {name: ranges, namespace: frontend}
spec:
  podSelector:
    matchExpressions: [{key: track, operator: DoesNotExist}]
  policyTypes: [Egress]
  egress:
  - ports:
    - {port: 8000, endPort: 8009}
    - {protocol: UDP, port: 7999, endPort: 8005}
    - {protocol: SCTP, port: 8009}
---
metadata: {name: ranges-in, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 443, endPort: 8000}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[0], O[0], 8009, true), both(tcp, P[0], O[0], 8010, false), both(tcp, P[0], O[0], 7999, false),
					both(udp, P[0], O[2], 8005, true), both(udp, P[0], O[2], 8009, false), both(sctp, P[0], O[3], 8009, true),
					both(sctp, P[0], O[3], 8005, false), both(tcp, P[1], O[0], 80, true),
					both(tcp, O[0], P[1], 7999, true), both(tcp, O[0], P[1], 8010, false), both(udp, O[0], P[1], 443, false))
			},
		},
		{
			// "should allow ingress access on one named port" and "should
			// allow egress access to server on a named port": a named port
			// resolves per pod (web-0's http is 8000, web-1's 8010); for
			// egress only a peer that is a pod (ext-0) has ports.
			name:  "named ports",
			ports: []uint16{80, 7999, 8000, 8005, 8009, 8010},
			policies: `
metadata: {name: named, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}, {protocol: UDP, port: dns}, {protocol: SCTP, port: sig}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]
    ports: [{port: http}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, O[0], P[0], 8000, true), both(tcp, O[0], P[0], 8010, false),
					both(tcp, O[1], P[1], 8010, true), both(tcp, O[1], P[1], 8000, false),
					both(udp, O[2], P[0], 8005, true), both(udp, O[2], P[1], 7999, true), both(udp, O[2], P[1], 8005, false),
					both(sctp, O[3], P[0], 8009, true), both(sctp, O[3], P[1], 8009, false),
					both(tcp, P[0], O[2], 80, true), both(tcp, P[0], O[3], 80, false), both(tcp, P[1], O[0], 80, false))
			},
		},
		{
			// "should allow ingress/egress when multiple policies select the
			// same pods" (union).
			name: "multiple policies (union)",
			policies: `
metadata: {name: tcp80-uplink, namespace: backend}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.0.2.0/24}}, {ipBlock: {cidr: "2001:db8:1::/64"}}]
    ports: [{port: 80}]
---
metadata: {name: udp-routed, namespace: backend}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.51.100.0/24}}, {ipBlock: {cidr: "2001:db8:2::/64"}}]
    ports: [{protocol: UDP, port: 8000}]
---
metadata: {name: ingress-only, namespace: backend}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - ports: [{port: 443}]
---
metadata: {name: tools-a, namespace: tools}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
    ports: [{port: 80}]
---
metadata: {name: tools-b, namespace: tools}
spec:
  podSelector: {matchLabels: {app: tool}}
  ingress:
  - from: [{ipBlock: {cidr: "2001:db8::/32"}}]
    ports: [{protocol: UDP}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[2], O[0], 80, true), both(udp, P[2], O[2], 8000, true), both(udp, P[2], O[0], 8000, false),
					both(tcp, P[2], O[2], 80, false), both(tcp, O[0], P[2], 443, true), both(tcp, O[0], P[2], 80, false),
					[]expectation{e(tcp, O[0], P[3], 80, false, true), e(tcp, O[0], P[3], 80, true, false),
						e(udp, O[2], P[3], 443, true, true), e(udp, O[2], P[3], 443, false, false)})
			},
		},
		{
			// "should enforce policy based on NamespaceSelector with
			// MatchExpressions", "...PodSelector and NamespaceSelector",
			// "should deny egress to pods in other namespaces with a bare
			// podSelector".
			name: "namespaceSelector and podSelector",
			policies: `
metadata: {name: dmz, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {zone: dmz}}, podSelector: {matchLabels: {app: ext}}}]
  ingress:
  - from: [{namespaceSelector: {matchExpressions: [{key: zone, operator: Exists}]}}]
    ports: [{port: 80}, {port: 8000}]
  - from: [{podSelector: {}}]
---
metadata: {name: same-ns-only, namespace: tools}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: ext}}}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[0], O[2], 80, true), both(udp, P[1], O[2], 8010, true), both(tcp, P[0], O[3], 80, false),
					both(tcp, P[0], O[1], 80, false), both(tcp, O[1], P[0], 80, true), both(tcp, O[2], P[1], 8000, true),
					both(tcp, O[1], P[0], 443, false), both(tcp, O[0], P[0], 80, false), both(tcp, P[3], O[2], 80, false))
			},
		},
		{
			// "should enforce policy to allow traffic only from/to a protocol"
			// (ports entries with a protocol and no port).
			name: "protocol-only port entries",
			policies: `
metadata: {name: proto, namespace: backend}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
  - ports: [{protocol: UDP}]
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.0/24}}, {ipBlock: {cidr: "2001:db8:1::/64"}}]
    ports: [{protocol: SCTP}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(udp, P[2], O[0], 443, true), both(udp, P[2], O[3], 8010, true), both(tcp, P[2], O[0], 80, false),
					both(sctp, P[2], O[0], 80, false), both(sctp, O[1], P[2], 8000, true), both(sctp, O[2], P[2], 8000, false),
					both(tcp, O[1], P[2], 8000, false))
			},
		},
		{
			// "should enforce policy based on Ports [Feature:SCTP]" and the
			// UDP variants.
			name: "UDP and SCTP ports",
			policies: `
metadata: {name: udp-sctp, namespace: frontend}
spec:
  podSelector: {matchLabels: {track: canary}}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{protocol: SCTP, port: 8000}, {protocol: UDP, port: 443}]
  egress:
  - to: [{ipBlock: {cidr: "2001:db8::/32"}}, {ipBlock: {cidr: 198.51.100.0/24}}]
    ports: [{protocol: SCTP, port: 80}, {protocol: UDP, port: 8010}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(sctp, O[0], P[1], 8000, true), both(udp, O[0], P[1], 8000, false), both(udp, O[3], P[1], 443, true),
					both(tcp, O[3], P[1], 443, false), both(sctp, P[1], O[2], 80, true), both(udp, P[1], O[3], 8010, true),
					[]expectation{e(sctp, P[1], O[0], 80, true, true), e(sctp, P[1], O[0], 80, false, false)},
					both(tcp, P[1], O[2], 80, false), both(sctp, P[0], O[0], 8000, true))
			},
		},
		{
			name: "LoadBalancer ingress enabled",
			cfg: func(c *config.Config) {
				c.DefaultIngress = config.Deny
				c.LoadBalancerIngress = true
			},
			policies: `
metadata: {name: web-80, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 80}]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				lb := x.LB
				return cat(both(tcp, O[0], lb, 80, true), both(udp, O[3], lb, 8000, true), both(sctp, O[2], lb, 8005, true),
					both(tcp, O[0], lb, 8000, false), both(udp, O[0], lb, 80, false), both(sctp, O[0], lb, 8000, false),
					both(tcp, O[0], P[0], 80, true), both(tcp, O[0], P[0], 443, false), both(tcp, O[0], P[2], 80, false))
			},
		},
		{
			name: "LoadBalancer ingress disabled",
			cfg:  func(c *config.Config) { c.DefaultIngress = config.Deny },
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				lb := x.LB
				return cat(both(tcp, O[0], lb, 80, false), both(udp, O[3], lb, 8000, false), both(tcp, P[0], O[0], 80, true))
			},
		},
		{
			// An invalid policy whose selector is valid still isolates its
			// pods and allows nothing; one with an invalid podSelector is
			// ignored.
			name:     "invalid policies",
			wantErrs: 2,
			policies: `
metadata: {name: bad-cidr, namespace: frontend}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.0.2.0/33}}]
---
metadata: {name: bad-selector, namespace: backend}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In}]
  policyTypes: [Ingress, Egress]
`,
			expect: func(x addrs) []expectation {
				P, O := x.P, x.O
				return cat(both(tcp, P[0], O[0], 80, false), both(tcp, O[0], P[0], 80, true), both(tcp, P[2], O[0], 80, true),
					both(tcp, O[0], P[2], 80, true))
			},
		},
	}
}

// TestScenarios applies each scenario's compiled ruleset in the fw
// namespace and compares every probed verdict, egress and ingress, with
// the oracle.
func TestScenarios(t *testing.T) {
	topo := newTopology(t)
	fw := newFirewall(t, topo)
	base := baseSnapshot(topo.Plan)
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			s := base
			s.Policies = parsePolicies(t, sc.policies)
			cfg := config.Defaults()
			cfg.ClusterInterfaces = []string{ClusterIf}
			if sc.cfg != nil {
				sc.cfg(&cfg)
			}
			rs := fw.apply(t, s, cfg, sc.wantErrs)
			ports := sc.ports
			if ports == nil {
				ports = []uint16{80, 443, 8000, 8010}
			}
			var expect []expectation
			if sc.expect != nil {
				expect = sc.expect(planAddrs(topo.Plan))
			}
			fw.compareAll(t, s, cfg, rs, allDirections(topo, ports), expect)
		})
	}
}
