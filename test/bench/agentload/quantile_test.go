package main

import (
	"math"
	"strings"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/proto"
)

const scraped = `# HELP anvil_grpc_server_rpc_seconds x
anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Heartbeat",le="0.001"} 7
anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Register",le="0.001"} 10
anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Register",le="0.002"} 90
anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Register",le="0.004"} 99
anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Register",le="+Inf"} 100
anvil_grpc_server_rpc_seconds_count{method="/anvil.v1.AgentService/Register"} 100
`

func TestHistogramQuantile(t *testing.T) {
	h, err := parseHistogram(strings.NewReader(scraped), "anvil_grpc_server_rpc_seconds", "/anvil.v1.AgentService/Register")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.05, 0.0005}, // first bucket, from 0
		{0.5, 0.0015},  // 50th of 80 between 1 and 2 ms: 1 + 40/80
		{0.99, 0.004},  // the 99th is the last in (2, 4] ms
		{0.999, 0.004}, // in +Inf: the largest finite bound
	} {
		if got := h.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.3f = %g, want %g", c.q, got, c.want)
		}
	}
	before := histogram{0.001: 10, 0.002: 10, 0.004: 10, math.Inf(1): 10}
	if got := h.sub(before).quantile(0.5); math.Abs(got-0.0015625) > 1e-9 { // 45th of 90: 45/80 into (1,2]
		t.Errorf("difference p50 = %g, want 0.0015625", got)
	}
	if got := (histogram{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty histogram p50 = %g, want NaN", got)
	}
	if _, err := parseHistogram(strings.NewReader(`anvil_grpc_server_rpc_seconds_bucket{method="/anvil.v1.AgentService/Register",le="x"} 1`),
		"anvil_grpc_server_rpc_seconds", "/anvil.v1.AgentService/Register"); err == nil {
		t.Error("a bad le was accepted")
	}
}

// TestInventory: a real server's size, valid for the controller, and the
// same bytes for the same agent.
func TestInventory(t *testing.T) {
	inv := inventory("01234567-89ab-cdef-0123-456789abcdef", 12345)
	if err := inv.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if len(inv.GetDisks()) < 24 || len(inv.GetNics()) < 8 || len(inv.GetPciDevices()) < 100 {
		t.Errorf("%d disks, %d NICs, %d PCI devices: want at least 24, 8, 100", len(inv.GetDisks()), len(inv.GetNics()), len(inv.GetPciDevices()))
	}
	a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&anvilv1.RegisterRequest{Inventory: inv})
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&anvilv1.RegisterRequest{Inventory: inventory("01234567-89ab-cdef-0123-456789abcdef", 12345)})
	if string(a) != string(b) {
		t.Error("two inventories of one agent differ")
	}
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 256, 65536} {
		for _, n := range inventory("01234567-89ab-cdef-0123-456789abcdef", i).GetNics() {
			if seen[n.GetMac()] {
				t.Errorf("MAC %s repeats", n.GetMac())
			}
			seen[n.GetMac()] = true
		}
	}
}

func TestSummary(t *testing.T) {
	s := summarize([]float64{5, 1, 3, 2, 4})
	if s.med != 3 || s.lo != 1 || s.hi != 5 {
		t.Errorf("summary %+v, want median 3 in [1, 5]", s)
	}
	if s := summarize([]float64{2, 4}); s.med != 3 {
		t.Errorf("median of 2 and 4 = %g, want 3", s.med)
	}
}
