package oracle_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/compile"
	"github.com/anvil-metal/anvil/firewall/config"
	"github.com/anvil-metal/anvil/firewall/internal/policygen"
	"github.com/anvil-metal/anvil/firewall/model"
	"github.com/anvil-metal/anvil/firewall/oracle"
)

// packetsPerSnapshot is how many packets each generated snapshot is
// checked with.
const packetsPerSnapshot = 200

// sizes are the snapshot bounds a seed can ask for: small ones find most
// bugs and shrink fast; bigger ones exercise shared sets and groups.
func sizes() []policygen.Options {
	return []policygen.Options{
		{},
		{Namespaces: 4, Pods: 20, Policies: 10, Services: 4, InvalidPercent: 10},
		{Namespaces: 1, Pods: 3, Policies: 2, Services: 1, InvalidPercent: 20},
	}
}

// seedOf turns fuzz input into the two PCG seeds (the first 16 bytes,
// zero padded, little endian) and a size class (byte 16).
func seedOf(data []byte) (s1, s2 uint64, size int) {
	var b [17]byte
	copy(b[:], data)
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:16]), int(b[16]) % len(sizes())
}

func seedBytes(s1, s2 uint64, size int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, s1)
	return append(binary.LittleEndian.AppendUint64(b, s2), byte(size))
}

// mismatch is a packet the compiled ruleset and the oracle disagree on.
type mismatch struct {
	p        model.Packet
	got      bool
	decision oracle.Decision
}

// firstMismatch compiles s and returns the first of pkts on which
// model.Eval and the oracle disagree, the ruleset and the compile errors.
func firstMismatch(s cluster.Snapshot, cfg config.Config, pkts []model.Packet) (*mismatch, model.Ruleset, []error) {
	rs, errs := compile.Compile(s, cfg)
	ev := oracle.New(s, cfg)
	for _, p := range pkts {
		want := ev.Decide(p)
		if got := model.Eval(rs, p); got != want.Allow {
			return &mismatch{p: p, got: got, decision: want}, rs, errs
		}
	}
	return nil, rs, errs
}

// stillFails tells whether the compiler and the oracle still disagree on
// p for s; a panic counts as not reproducing the same bug.
func stillFails(cfg config.Config, p model.Packet) func(cluster.Snapshot) bool {
	return func(s cluster.Snapshot) (fails bool) {
		defer func() {
			if recover() != nil {
				fails = false
			}
		}()
		m, _, _ := firstMismatch(s, cfg, []model.Packet{p})
		return m != nil
	}
}

// checkSeed generates a snapshot, a configuration and packets from the
// seeds, and fails t with a shrunk repro on the first disagreement.
func checkSeed(t testing.TB, s1, s2 uint64, size int) {
	t.Helper()
	r := rand.New(rand.NewPCG(s1, s2))
	s := policygen.Snapshot(r, sizes()[size])
	cfg := policygen.Config(r)
	pkts := policygen.Packets(r, s, cfg, packetsPerSnapshot)

	m, rs, errs := firstMismatch(s, cfg, pkts)
	checkErrors(t, s, errs)
	if m == nil {
		return
	}
	small := policygen.Shrink(s, stillFails(cfg, m.p))
	sm, srs, _ := firstMismatch(small, cfg, []model.Packet{m.p})
	if sm == nil { // shrinking lost it (should not happen): report the original
		small, sm, srs = s, m, rs
	}
	manifests, err := policygen.YAML(small, &cfg)
	if err != nil {
		manifests = err.Error()
	}
	// After the config line: the packet, with the oracle's verdict.
	head, rest, _ := strings.Cut(manifests, "\n")
	regress := head + "\n# packet: " + packetLine(sm.p) + " " + verdict(sm.decision.Allow) + "\n" + rest
	t.Fatalf("seed (%d, %d), size %d: compiler and oracle disagree\npacket: %s\ncompiled ruleset: %s; oracle: %s (%s)\n"+
		"minimal case (once it is settled who is right, save it as testdata/regress/NAME.yaml with the right verdict):\n%s\n"+
		"ruleset of the minimal case:\n%s",
		s1, s2, size, packetLine(sm.p), verdict(sm.got), verdict(sm.decision.Allow), sm.decision.Reason, regress, model.Render(srs))
}

// checkErrors checks the compiler's contract for invalid policies: one
// *cluster.PolicyError per policy cluster.Validate rejects, none other.
func checkErrors(t testing.TB, s cluster.Snapshot, errs []error) {
	t.Helper()
	var want, got []string
	for i := range s.Policies {
		if cluster.Validate(&s.Policies[i]) != nil {
			want = append(want, cluster.Ref(s.Policies[i].ObjectMeta))
		}
	}
	for _, err := range errs {
		var pe *cluster.PolicyError
		if !errors.As(err, &pe) {
			t.Errorf("compile error %v is not a *cluster.PolicyError", err)
			continue
		}
		got = append(got, pe.Namespace+"/"+pe.Name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("compile errors name %v, want the invalid policies %v", got, want)
	}
}

func verdict(accept bool) string {
	if accept {
		return "accept"
	}
	return "drop"
}

// packetLine prints p as testdata/regress's "# packet:" lines have it:
// iif oif src dst proto dport.
func packetLine(p model.Packet) string {
	return fmt.Sprintf("%s %s %s %s %d %d", p.Iif, p.Oif, p.Src, p.Dst, p.Proto, p.DstPort)
}

func parsePacketLine(line string) (model.Packet, bool, error) {
	f := strings.Fields(line)
	if len(f) != 7 || (f[6] != "accept" && f[6] != "drop") {
		return model.Packet{}, false, fmt.Errorf("packet line %q: want iif oif src dst proto dport accept|drop", line)
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	proto, err3 := strconv.ParseUint(f[4], 10, 8)
	dport, err4 := strconv.ParseUint(f[5], 10, 16)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return model.Packet{}, false, fmt.Errorf("packet line %q: %w", line, err)
	}
	if src.Is4() != dst.Is4() {
		return model.Packet{}, false, fmt.Errorf("packet line %q: mixed address families", line)
	}
	p := model.Packet{Iif: f[0], Oif: f[1], Src: src, Dst: dst, Proto: uint8(proto), DstPort: uint16(dport)}
	return p, f[6] == "accept", nil
}

// TestRegressions checks the cases in testdata/regress: hand-written ones
// for the semantics' corners, and the minimal repros of past
// disagreements. The oracle and the compiled ruleset must both give each
// "# packet:" line's verdict.
func TestRegressions(t *testing.T) {
	files, _ := filepath.Glob("testdata/regress/*.yaml")
	if len(files) == 0 {
		t.Fatal("no regression cases")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, c, err := policygen.Parse(string(raw))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			cfg := config.Defaults()
			if c != nil {
				cfg = *c
			}
			rs, errs := compile.Compile(s, cfg)
			checkErrors(t, s, errs)
			ev := oracle.New(s, cfg)
			n := 0
			for _, line := range strings.Split(string(raw), "\n") {
				text, ok := strings.CutPrefix(line, "# packet: ")
				if !ok {
					continue
				}
				p, want, err := parsePacketLine(text)
				if err != nil {
					t.Fatal(err)
				}
				n++
				if d := ev.Decide(p); d.Allow != want {
					t.Errorf("%s: oracle: %s (%s), want %s", text, verdict(d.Allow), d.Reason, verdict(want))
				}
				if got := model.Eval(rs, p); got != want {
					t.Errorf("%s: compiled ruleset: %s, want %s", text, verdict(got), verdict(want))
				}
			}
			if n == 0 {
				t.Error("no # packet: lines")
			}
			if t.Failed() {
				t.Logf("ruleset:\n%s", model.Render(rs))
			}
		})
	}
}

// FuzzCompileMatchesOracle: for random snapshots and configurations, the
// compiled ruleset (interpreted by model.Eval) accepts exactly the packets
// the oracle accepts.
func FuzzCompileMatchesOracle(f *testing.F) {
	for i := range uint64(9) {
		f.Add(seedBytes(i, 0, int(i)%len(sizes())))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s1, s2, size := seedOf(data)
		checkSeed(t, s1, s2, size)
	})
}

// TestCompileMatchesOracle is the fuzzer's property over a fixed range of
// seeds, so that every go test run checks it.
func TestCompileMatchesOracle(t *testing.T) {
	n := uint64(300)
	if testing.Short() {
		n = 50
	}
	for i := range n {
		checkSeed(t, i, 0, int(i)%len(sizes()))
		if t.Failed() {
			return
		}
	}
}

// TestCompileOrderIndependent: the compiler's output does not depend on
// the order of the snapshot's objects.
func TestCompileOrderIndependent(t *testing.T) {
	for i := range uint64(100) {
		r := rand.New(rand.NewPCG(i, 1))
		s := policygen.Snapshot(r, policygen.Options{})
		cfg := policygen.Config(r)
		rs, _ := compile.Compile(s, cfg)
		sh := s
		sh.Policies = shuffled(r, s.Policies)
		sh.Pods = shuffled(r, s.Pods)
		sh.Namespaces = shuffled(r, s.Namespaces)
		sh.Services = shuffled(r, s.Services)
		rs2, _ := compile.Compile(sh, cfg)
		if a, b := model.Render(rs), model.Render(rs2); a != b {
			t.Fatalf("seed %d: output depends on input order:\n%s", i, lineDiff(a, b))
		}
	}
}

func shuffled[T any](r *rand.Rand, in []T) []T {
	out := slices.Clone(in)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines vs %d", len(al), len(bl))
}
