package app

import (
	"testing"

	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/metrics"
	"github.com/anvil-metal/anvil/firewall/model"
)

// tableCounters stands in for the kernel's counters: a committed change
// resets them, as replacing the table does.
type tableCounters struct {
	counts  map[string]uint64
	changed bool
}

func (c *tableCounters) Apply(model.Ruleset) (bool, error) {
	if c.changed {
		c.counts = map[string]uint64{}
	}
	return c.changed, nil
}

func (c *tableCounters) PacketCounts() (map[string]uint64, error) { return c.counts, nil }

// TestCountersNotDoubleCounted: reconciles that change nothing must not
// fold the live counters into the totals again.
func TestCountersNotDoubleCounted(t *testing.T) {
	k := &tableCounters{counts: map[string]uint64{}, changed: true}
	m := metrics.New()
	o := Options{Config: config.Defaults(), Applier: k, Metrics: m}
	s := snapshot("203.0.113.0/24", false)
	Once(o, s) // committed: table fresh
	k.counts["prod/web-out"] = 5
	k.changed = false
	Once(o, s)
	Once(o, s)
	ref := model.PolicyRef{Namespace: "prod", Name: "web-out"}
	pp, _, err := m.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if pp[ref][0] != 5 {
		t.Fatalf("after two unchanged reconciles: accepted = %d, want 5", pp[ref][0])
	}
	k.changed = true // a swap: the old table's 5 are folded, the new starts at 0
	Once(o, s)
	k.counts["prod/web-out"] = 2
	if pp, _, _ = m.Totals(); pp[ref][0] != 7 {
		t.Fatalf("after a swap: accepted = %d, want 7", pp[ref][0])
	}
}
