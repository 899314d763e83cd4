// Package metrics exposes anvil-firewall's Prometheus metrics: packets
// accepted and dropped per NetworkPolicy (read from the nftables rule
// counters at scrape time and attributed through the ruleset's counter
// owners), reconcile duration, the last apply's result and the number of
// invalid policies. Everything lives in one registry the caller owns.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anvil-metal/anvil/firewall/model"
)

// CounterReader reads packet counters by rule comment.
type CounterReader func() (map[string]uint64, error)

// Metrics is the firewall's instrumentation.
type Metrics struct {
	Registry *prometheus.Registry

	reconcile   prometheus.Histogram
	applies     *prometheus.CounterVec
	lastResult  prometheus.Gauge
	lastApplied prometheus.Gauge
	invalid     prometheus.Gauge

	mu     sync.Mutex
	owners map[string]model.Owner
	read   CounterReader
	// Totals of rulesets replaced since start: a new table's counters
	// start at zero, so the old ones are folded in (Pending, Fold).
	basePolicy map[model.PolicyRef][2]uint64
	baseOther  map[string][2]uint64
}

// New registers every metric in a new registry. read may be nil until
// SetCounters is called.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anvil_firewall_reconcile_duration_seconds",
			Help:    "Time from a cluster change being seen to the ruleset being applied (compile + apply).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anvil_firewall_applies_total",
			Help: "Reconciles by result: changed (a new ruleset was committed), unchanged (nothing to do), error (the kernel kept the last good ruleset).",
		}, []string{"result"}),
		lastResult: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_firewall_last_apply_success",
			Help: "1 if the last reconcile left the wanted ruleset in the kernel, 0 if it failed.",
		}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_firewall_last_apply_timestamp_seconds",
			Help: "Unix time of the last successful reconcile.",
		}),
		invalid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_firewall_invalid_policies",
			Help: "NetworkPolicies rejected by the last compile (each is logged with its name).",
		}),
	}
	m.Registry.MustRegister(m.reconcile, m.applies, m.lastResult, m.lastApplied, m.invalid, (*packets)(m))
	return m
}

// Result records one reconcile.
func (m *Metrics) Result(d time.Duration, changed bool, err error, invalid int, at time.Time) {
	m.reconcile.Observe(d.Seconds())
	m.invalid.Set(float64(invalid))
	switch {
	case err != nil:
		m.applies.WithLabelValues("error").Inc()
		m.lastResult.Set(0)
		return
	case changed:
		m.applies.WithLabelValues("changed").Inc()
	default:
		m.applies.WithLabelValues("unchanged").Inc()
	}
	m.lastResult.Set(1)
	m.lastApplied.Set(float64(at.UnixNano()) / 1e9)
}

// Pending reads the counters of the ruleset now in the kernel, attributed
// to policies; Fold adds such a reading to the totals once that ruleset
// has been replaced (a new table's counters start at zero), so exported
// counters never go backwards. Packets counted between the read and the
// swap are lost (microseconds).
type Pending struct {
	policy map[model.PolicyRef][2]uint64
	other  map[string][2]uint64
}

// Pending reads the current counters without folding them.
func (m *Metrics) Pending() (Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.read == nil {
		return Pending{}, nil
	}
	counts, err := m.read()
	if err != nil {
		return Pending{}, err
	}
	pp, other := Attribute(m.owners, counts)
	return Pending{pp, other}, nil
}

// Fold adds a reading taken before a swap to the totals.
func (m *Metrics) Fold(p Pending) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.basePolicy == nil {
		m.basePolicy, m.baseOther = map[model.PolicyRef][2]uint64{}, map[string][2]uint64{}
	}
	for k, v := range p.policy {
		b := m.basePolicy[k]
		m.basePolicy[k] = [2]uint64{b[0] + v[0], b[1] + v[1]}
	}
	for k, v := range p.other {
		b := m.baseOther[k]
		m.baseOther[k] = [2]uint64{b[0] + v[0], b[1] + v[1]}
	}
}

// Totals returns packets per policy ([0] accepted, [1] dropped) and per
// unowned rule, since start.
func (m *Metrics) Totals() (map[model.PolicyRef][2]uint64, map[string][2]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pp, other := map[model.PolicyRef][2]uint64{}, map[string][2]uint64{}
	for k, v := range m.basePolicy {
		pp[k] = v
	}
	for k, v := range m.baseOther {
		other[k] = v
	}
	if m.read == nil {
		return pp, other, nil
	}
	counts, err := m.read()
	if err != nil {
		return pp, other, err
	}
	cp, co := Attribute(m.owners, counts)
	for k, v := range cp {
		b := pp[k]
		pp[k] = [2]uint64{b[0] + v[0], b[1] + v[1]}
	}
	for k, v := range co {
		b := other[k]
		other[k] = [2]uint64{b[0] + v[0], b[1] + v[1]}
	}
	return pp, other, nil
}

// SetCounters installs the counter owners of the ruleset now in the
// kernel and the function reading its counters.
func (m *Metrics) SetCounters(owners map[string]model.Owner, read CounterReader) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owners, m.read = owners, read
}

// packets collects per-policy and default packet counters at scrape time.
type packets Metrics

var (
	policyDesc = prometheus.NewDesc("anvil_firewall_policy_packets_total",
		"Packets of new connections accepted by a NetworkPolicy's rules, or dropped because a pod it selects was isolated and no rule allowed them (a drop counts for every policy selecting the pod).",
		[]string{"namespace", "name", "verdict"}, nil)
	defaultDesc = prometheus.NewDesc("anvil_firewall_default_packets_total",
		"Packets of new connections judged by a default verdict or the LoadBalancer rule.",
		[]string{"rule", "verdict"}, nil)
	scrapeErrDesc = prometheus.NewDesc("anvil_firewall_counter_read_errors",
		"1 if reading the nftables counters failed during this scrape.", nil, nil)
)

func (p *packets) Describe(ch chan<- *prometheus.Desc) {
	ch <- policyDesc
	ch <- defaultDesc
	ch <- scrapeErrDesc
}

// Attribute sums counters per (policy, verdict) and per unowned rule.
func Attribute(owners map[string]model.Owner, counts map[string]uint64) (perPolicy map[model.PolicyRef][2]uint64, other map[string][2]uint64) {
	perPolicy = map[model.PolicyRef][2]uint64{}
	other = map[string][2]uint64{}
	for comment, n := range counts {
		o, ok := owners[comment]
		if !ok {
			continue
		}
		i := 1 // dropped
		if o.Accept {
			i = 0
		}
		if len(o.Policies) == 0 {
			v := other[comment]
			v[i] += n
			other[comment] = v
			continue
		}
		for _, ref := range o.Policies {
			v := perPolicy[ref]
			v[i] += n
			perPolicy[ref] = v
		}
	}
	return perPolicy, other
}

func (p *packets) Collect(ch chan<- prometheus.Metric) {
	perPolicy, other, err := (*Metrics)(p).Totals()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, failed)
	verdicts := [2]string{"accepted", "dropped"}
	for ref, v := range perPolicy {
		for i, n := range v {
			ch <- prometheus.MustNewConstMetric(policyDesc, prometheus.CounterValue, float64(n), ref.Namespace, ref.Name, verdicts[i])
		}
	}
	for rule, v := range other {
		for i, n := range v {
			if n > 0 || (i == 0) == p.acceptRule(rule) {
				ch <- prometheus.MustNewConstMetric(defaultDesc, prometheus.CounterValue, float64(n), rule, verdicts[i])
			}
		}
	}
}

func (p *packets) acceptRule(comment string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owners[comment].Accept
}
