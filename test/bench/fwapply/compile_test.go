package main

import (
	"testing"

	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
)

// BenchmarkCompile2000 compiles the benchmark's 2,000-policy snapshot
// (for profiling the compiler: go test -bench . -cpuprofile).
func BenchmarkCompile2000(b *testing.B) {
	s := snapshot(2000, 5)
	cfg := config.Defaults()
	cfg.ClusterInterfaces = []string{"cluster0"}
	for b.Loop() {
		if _, errs := compile.Compile(s, cfg); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
}
