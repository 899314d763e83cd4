package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anvil-metal/anvil/firewall/model"
)

func TestPerPolicyCountersSurviveSwaps(t *testing.T) {
	m := New()
	web := model.PolicyRef{Namespace: "prod", Name: "web"}
	db := model.PolicyRef{Namespace: "prod", Name: "db"}
	owners := map[string]model.Owner{
		"prod/web":       {Accept: true, Policies: []model.PolicyRef{web}},
		"drop egress g0": {Accept: false, Policies: []model.PolicyRef{web, db}},
		"default egress": {Accept: false},
	}
	counts := map[string]uint64{"prod/web": 5, "drop egress g0": 2, "default egress": 7, "unknown": 100}
	m.SetCounters(owners, func() (map[string]uint64, error) { return counts, nil })
	want := `
# HELP anvil_firewall_policy_packets_total Packets of new connections accepted by a NetworkPolicy's rules, or dropped because a pod it selects was isolated and no rule allowed them (a drop counts for every policy selecting the pod).
# TYPE anvil_firewall_policy_packets_total counter
anvil_firewall_policy_packets_total{name="db",namespace="prod",verdict="accepted"} 0
anvil_firewall_policy_packets_total{name="db",namespace="prod",verdict="dropped"} 2
anvil_firewall_policy_packets_total{name="web",namespace="prod",verdict="accepted"} 5
anvil_firewall_policy_packets_total{name="web",namespace="prod",verdict="dropped"} 2
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "anvil_firewall_policy_packets_total"); err != nil {
		t.Fatal(err)
	}
	// A swap: the old counters are folded in, the new table starts at 0.
	pending, err := m.Pending()
	if err != nil {
		t.Fatal(err)
	}
	m.Fold(pending)
	counts = map[string]uint64{"prod/web": 1}
	m.SetCounters(map[string]model.Owner{"prod/web": owners["prod/web"]}, func() (map[string]uint64, error) { return counts, nil })
	pp, other, err := m.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if pp[web] != [2]uint64{6, 2} || pp[db] != [2]uint64{0, 2} || other["default egress"] != [2]uint64{0, 7} {
		t.Errorf("totals after swap: %v %v", pp, other)
	}
	// A failing read is reported, not hidden.
	m.SetCounters(nil, func() (map[string]uint64, error) { return nil, errors.New("netlink: boom") })
	wantErr := `
# HELP anvil_firewall_counter_read_errors 1 if reading the nftables counters failed during this scrape.
# TYPE anvil_firewall_counter_read_errors gauge
anvil_firewall_counter_read_errors 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(wantErr), "anvil_firewall_counter_read_errors"); err != nil {
		t.Error(err)
	}
}

func TestResult(t *testing.T) {
	m := New()
	m.Result(3*time.Millisecond, true, nil, 2, time.Unix(100, 0))
	m.Result(time.Millisecond, false, nil, 0, time.Unix(200, 0))
	m.Result(time.Millisecond, false, errors.New("EINVAL"), 0, time.Unix(300, 0))
	if v := testutil.ToFloat64(m.lastResult); v != 0 {
		t.Errorf("last_apply_success = %v after an error", v)
	}
	if v := testutil.ToFloat64(m.lastApplied); v != 200 {
		t.Errorf("last_apply_timestamp = %v, want 200 (the last success)", v)
	}
	for res, want := range map[string]float64{"changed": 1, "unchanged": 1, "error": 1} {
		if v := testutil.ToFloat64(m.applies.WithLabelValues(res)); v != want {
			t.Errorf("applies{%s} = %v", res, v)
		}
	}
}
