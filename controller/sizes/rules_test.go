package sizes_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/controller/sizes"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

const (
	tCores   = anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES
	tMemory  = anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY
	tStorage = anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE
	tGPU     = anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU
	gib      = 1 << 30
)

func con(t anvilv1.ConstraintType, lo, hi uint64, glob string) *anvilv1.Constraint {
	return &anvilv1.Constraint{Type: t, Min: lo, Max: hi, ModelGlob: glob}
}

func mk(id string, cs ...*anvilv1.Constraint) *anvilv1.Size {
	return &anvilv1.Size{Id: id, Constraints: cs}
}

func TestValidateReportsEachProblem(t *testing.T) {
	tests := []struct {
		name string
		s    *anvilv1.Size
		want []string // one substring per reported problem; none means valid
	}{
		{"valid, every type", mk("c1.large-2", con(tCores, 8, 64, "AMD EPYC*"), con(tMemory, 1, 512*gib, ""),
			con(tStorage, 1, 4096*gib, "SAMSUNG [A-Z]*"), con(tGPU, 1, 8, "NVIDIA\\ A100")), nil},
		{"63 character id", mk(strings.Repeat("a", 63), con(tCores, 1, 1, "")), nil},
		{"64 character id", mk(strings.Repeat("a", 64), con(tCores, 1, 1, "")), []string{"id is not valid"}},
		{"empty id", mk("", con(tCores, 1, 1, "")), []string{`size "": id is not valid`}},
		{"upper-case id", mk("Big", con(tCores, 1, 1, "")), []string{`size "Big": id is not valid`}},
		{"id starting with a dot", mk(".x", con(tCores, 1, 1, "")), []string{"id is not valid"}},
		{"no constraints", mk("x"), []string{"no constraints"}},
		{"nil constraint", mk("x", nil), []string{"constraints[0]: is required"}},
		{"unspecified type", mk("x", con(anvilv1.ConstraintType_CONSTRAINT_TYPE_UNSPECIFIED, 1, 2, "")),
			[]string{"constraints[0].type: unknown type CONSTRAINT_TYPE_UNSPECIFIED"}},
		{"min above max", mk("x", con(tMemory, 1, 2, ""), con(tGPU, 3, 2, "")), []string{"constraints[1].min: min 3 > max 2"}},
		{"max zero", mk("x", con(tGPU, 0, 0, "")), []string{"constraints[0].max: max must be > 0"}},
		{"unterminated class", mk("x", con(tCores, 1, 2, "Intel[")), []string{`constraints[0].model_glob: model glob "Intel[": syntax error in pattern`}},
		{"trailing backslash", mk("x", con(tStorage, 1, 2, `disk\`)), []string{"constraints[0].model_glob"}},
		{"glob on memory", mk("x", con(tMemory, 1, 2, "DDR5*")), []string{"constraints[0].model_glob: memory has no model"}},
		{"duplicate type", mk("x", con(tCores, 1, 2, ""), con(tMemory, 1, 2, ""), con(tCores, 3, 4, "AMD*")),
			[]string{"constraints[2].type: cores already constrained by constraints[0]"}},
		{"everything wrong at once", mk("X", nil, con(tGPU, 5, 0, "["), con(tGPU, 1, 1, "")), []string{
			"id is not valid", "constraints[0]: is required", "constraints[1].max", "constraints[1].min: min 5 > max 0",
			"constraints[1].model_glob", "constraints[2].type: gpu already constrained by constraints[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sizes.Validate(tt.s)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an invalid size")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestMatchesPerType(t *testing.T) {
	full := &anvilv1.Inventory{
		Cpu:    &anvilv1.CPU{Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Cores: 64},
		Memory: &anvilv1.Memory{TotalBytes: 512 * gib},
		Disks: []*anvilv1.Disk{
			{Model: "INTEL SSDPE2KX040T8", SizeBytes: 4000 * gib},
			{Model: "SAMSUNG MZ7LH480", SizeBytes: 480 * gib},
			nil,
			{Model: "SAMSUNG MZ7LH480", SizeBytes: 480 * gib, Removable: true},
		},
		Gpus: []*anvilv1.GPU{{Model: "NVIDIA H100"}, {Model: "NVIDIA A10"}, nil},
	}
	huge := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{SizeBytes: math.MaxUint64}, {SizeBytes: 2}}}
	tests := []struct {
		name string
		s    *anvilv1.Size
		inv  *anvilv1.Inventory
		want bool
	}{
		{"cores at min", mk("a", con(tCores, 64, 128, "")), full, true},
		{"cores at max", mk("a", con(tCores, 1, 64, "")), full, true},
		{"cores below min", mk("a", con(tCores, 65, 128, "")), full, false},
		{"cores glob with parentheses", mk("a", con(tCores, 1, 64, "Intel(R) Xeon(R) Gold *")), full, true},
		{"cores glob must match the whole model", mk("a", con(tCores, 1, 64, "Xeon*")), full, false},
		{"cores glob, no CPU reported", mk("a", con(tCores, 0, 64, "Intel*")), &anvilv1.Inventory{}, false},
		{"cores star glob, no CPU reported", mk("a", con(tCores, 0, 64, "*")), &anvilv1.Inventory{}, true},
		{"memory at both bounds", mk("a", con(tMemory, 512*gib, 512*gib, "")), full, true},
		{"memory missing counts zero", mk("a", con(tMemory, 1, 512*gib, "")), &anvilv1.Inventory{}, false},
		{"storage: all non-removable disks", mk("a", con(tStorage, 4480*gib, 4480*gib, "")), full, true},
		{"storage: removable disk excluded", mk("a", con(tStorage, 4960*gib, 4960*gib, "")), full, false},
		{"storage: glob selects disks", mk("a", con(tStorage, 480*gib, 480*gib, "SAMSUNG*")), full, true},
		{"storage: glob selects no disk", mk("a", con(tStorage, 1, math.MaxUint64, "WDC*")), full, false},
		{"storage: sum saturates instead of wrapping", mk("a", con(tStorage, math.MaxUint64, math.MaxUint64, "")), huge, true},
		{"gpu: all", mk("a", con(tGPU, 2, 2, "")), full, true},
		{"gpu: by model", mk("a", con(tGPU, 1, 1, "NVIDIA H100")), full, true},
		{"gpu: class glob", mk("a", con(tGPU, 2, 2, "NVIDIA [AH]1*")), full, true},
		{"gpu: none of the model", mk("a", con(tGPU, 1, 8, "AMD*")), full, false},
		{"gpu: zero allowed, none present", mk("a", con(tGPU, 0, 1, "")), &anvilv1.Inventory{}, true},
		{"every constraint must hold", mk("a", con(tCores, 64, 64, ""), con(tMemory, 1, 256*gib, "")), full, false},
		{"nil inventory", mk("a", con(tMemory, 0, 1, "")), nil, true},
		{"nil size", nil, full, false},
		{"unknown type never holds", mk("a", con(99, 0, math.MaxUint64, "")), full, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sizes.Matches(tt.s, tt.inv); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchCounts(t *testing.T) {
	inv := &anvilv1.Inventory{Cpu: &anvilv1.CPU{Cores: 16}, Memory: &anvilv1.Memory{TotalBytes: 64 * gib}}
	small := mk("small", con(tCores, 1, 16, ""))
	big := mk("big", con(tCores, 17, 64, ""))
	lowMem := mk("low-mem", con(tMemory, 1, 64*gib, ""))
	tests := []struct {
		name  string
		sizes []*anvilv1.Size
		want  string
	}{
		{"none defined", nil, sizes.Unknown},
		{"none match", []*anvilv1.Size{big}, sizes.Unknown},
		{"one matches", []*anvilv1.Size{big, nil, small}, "small"},
		{"two match", []*anvilv1.Size{small, big, lowMem}, sizes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sizes.Match(tt.sizes, inv); got != tt.want {
				t.Errorf("Match = %q, want %q", got, tt.want)
			}
		})
	}
	if sizes.Unknown != "unknown" {
		t.Errorf("Unknown = %q; the API documents \"unknown\"", sizes.Unknown)
	}
}

func TestOverlapsRules(t *testing.T) {
	tests := []struct {
		name string
		a, b *anvilv1.Size
		want bool
	}{
		{"identical", mk("a", con(tCores, 1, 8, "")), mk("b", con(tCores, 1, 8, "")), true},
		{"ranges share one value", mk("a", con(tMemory, 1, 8, "")), mk("b", con(tMemory, 8, 9, "")), true},
		{"ranges apart by one", mk("a", con(tMemory, 1, 8, "")), mk("b", con(tMemory, 9, 10, "")), false},
		{"unconstrained type does not separate", mk("a", con(tGPU, 1, 8, "")), mk("b", con(tCores, 1, 8, ""), con(tMemory, 1, 8, "")), true},
		{"one of several types separates", mk("a", con(tCores, 1, 8, ""), con(tGPU, 1, 1, "")), mk("b", con(tCores, 1, 8, ""), con(tGPU, 2, 4, "")), false},
		// cores: the glob is a condition on the CPU model.
		{"cores: same literal", mk("a", con(tCores, 1, 8, "EPYC 7543")), mk("b", con(tCores, 1, 8, "EPYC 7543")), true},
		{"cores: different literals", mk("a", con(tCores, 1, 8, "EPYC 7543")), mk("b", con(tCores, 1, 8, "EPYC 7313")), false},
		{"cores: escaped literal equals plain literal", mk("a", con(tCores, 1, 8, `EPYC\ 7543`)), mk("b", con(tCores, 1, 8, "EPYC 7543")), true},
		{"cores: glob matches literal", mk("a", con(tCores, 1, 8, "EPYC 7?43")), mk("b", con(tCores, 1, 8, "EPYC 7543")), true},
		{"cores: glob misses literal", mk("a", con(tCores, 1, 8, "EPYC 7[12]*")), mk("b", con(tCores, 1, 8, "EPYC 7543")), false},
		{"cores: vendor prefixes apart", mk("a", con(tCores, 1, 8, "Intel*")), mk("b", con(tCores, 1, 8, "AMD*")), false},
		{"cores: nested prefixes", mk("a", con(tCores, 1, 8, "AMD*")), mk("b", con(tCores, 1, 8, "AMD EPYC*")), true},
		{"cores: suffixes apart", mk("a", con(tCores, 1, 8, "*v3")), mk("b", con(tCores, 1, 8, "*v4")), false},
		{"cores: prefix and suffix may meet", mk("a", con(tCores, 1, 8, "Intel*")), mk("b", con(tCores, 1, 8, "*v4")), true},
		{"cores: classes are not literal", mk("a", con(tCores, 1, 8, "[AI]*")), mk("b", con(tCores, 1, 8, "AMD*")), true},
		{"cores: class containing a bracket", mk("a", con(tCores, 1, 8, `X[\]]Y`)), mk("b", con(tCores, 1, 8, "X]Y")), true},
		{"cores: empty glob is any model", mk("a", con(tCores, 1, 8, "")), mk("b", con(tCores, 1, 8, "Intel*")), true},
		{"cores: models apart but ranges too", mk("a", con(tCores, 1, 8, "Intel*")), mk("b", con(tCores, 9, 16, "Intel*")), false},
		// storage and gpu: the glob chooses what is counted.
		{"gpu: different models counted separately", mk("a", con(tGPU, 1, 1, "*A100*")), mk("b", con(tGPU, 4, 8, "*H100*")), true},
		{"gpu: different literals counted separately", mk("a", con(tGPU, 1, 1, "A100")), mk("b", con(tGPU, 4, 8, "H100")), true},
		{"gpu: same glob, ranges apart", mk("a", con(tGPU, 1, 1, "*A100*")), mk("b", con(tGPU, 2, 8, "*A100*")), false},
		{"storage: all disks can never be fewer than some", mk("a", con(tStorage, 1, 100, "")), mk("b", con(tStorage, 200, 300, "SAMSUNG*")), false},
		{"storage: all disks may be more than some", mk("a", con(tStorage, 200, 300, "")), mk("b", con(tStorage, 1, 100, "SAMSUNG*")), true},
		{"storage: all disks reach some", mk("a", con(tStorage, 1, 200, "")), mk("b", con(tStorage, 200, 300, "SAMSUNG*")), true},
		// sizes no machine matches
		{"nil size", nil, mk("b", con(tCores, 1, 8, "")), false},
		{"size without constraints", mk("a"), mk("b", con(tCores, 1, 8, "")), false},
		{"unsatisfiable constraint", mk("a", con(tMemory, 9, 1, "")), mk("b", con(tCores, 1, 8, "")), false},
		{"unknown type", mk("a", con(99, 1, 9, "")), mk("b", con(tCores, 1, 8, "")), false},
		{"malformed glob is conservatively overlapping", mk("a", con(tCores, 1, 8, "Intel[")), mk("b", con(tCores, 1, 8, "AMD*")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sizes.Overlaps(tt.a, tt.b); got != tt.want {
				t.Errorf("Overlaps(a, b) = %v, want %v", got, tt.want)
			}
			if got := sizes.Overlaps(tt.b, tt.a); got != tt.want {
				t.Errorf("Overlaps(b, a) = %v, want %v", got, tt.want)
			}
		})
	}
}

// Small pools so that random sizes and machines collide often.
var (
	cpuModels  = []string{"", "AMD EPYC 7543", "AMD EPYC 7313", "Intel Xeon v3", "Intel Xeon v4"}
	partModels = []string{"", "SAMSUNG A", "SAMSUNG B", "INTEL C", "NVIDIA H100", "NVIDIA A100"}
	globPool   = []string{"", "*", "AMD*", "Intel*", "*v3", "*v4", "AMD EPYC 7543", "AMD EPYC 7?13", "SAMSUNG*",
		"SAMSUNG A", "*A*", "NVIDIA [AH]100", "NVIDIA H100", "INTEL*", `AMD\ EPYC*`}
)

func randomSize(r *rand.Rand, id string) *anvilv1.Size {
	s := &anvilv1.Size{Id: id}
	for _, t := range []anvilv1.ConstraintType{tCores, tMemory, tStorage, tGPU} {
		if r.IntN(2) == 0 {
			continue
		}
		lo := uint64(r.IntN(6))
		c := &anvilv1.Constraint{Type: t, Min: lo, Max: lo + uint64(r.IntN(4)) + 1}
		if t != tMemory && r.IntN(2) == 0 {
			c.ModelGlob = globPool[r.IntN(len(globPool))]
		}
		s.Constraints = append(s.Constraints, c)
	}
	if len(s.Constraints) == 0 {
		s.Constraints = append(s.Constraints, &anvilv1.Constraint{Type: tCores, Min: 1, Max: 4})
	}
	return s
}

func randomInventory(r *rand.Rand) *anvilv1.Inventory {
	inv := &anvilv1.Inventory{
		Cpu:    &anvilv1.CPU{Model: cpuModels[r.IntN(len(cpuModels))], Cores: uint32(r.IntN(10))},
		Memory: &anvilv1.Memory{TotalBytes: uint64(r.IntN(10))},
	}
	for range r.IntN(4) {
		inv.Disks = append(inv.Disks, &anvilv1.Disk{Model: partModels[r.IntN(len(partModels))], SizeBytes: uint64(r.IntN(5)), Removable: r.IntN(4) == 0})
	}
	for range r.IntN(4) {
		inv.Gpus = append(inv.Gpus, &anvilv1.GPU{Model: partModels[r.IntN(len(partModels))]})
	}
	return inv
}

// TestOverlapsIsSoundAndSymmetric: whenever a random machine matches two
// sizes, Overlaps must say so; and Overlaps must not depend on the order.
func TestOverlapsIsSoundAndSymmetric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	apart, witnessed := 0, 0
	for i := range 3000 {
		a, b := randomSize(r, fmt.Sprint("a", i)), randomSize(r, fmt.Sprint("b", i))
		for _, s := range []*anvilv1.Size{a, b} {
			if err := sizes.Validate(s); err != nil {
				t.Fatalf("generator made an invalid size: %v", err)
			}
		}
		ov := sizes.Overlaps(a, b)
		if ov != sizes.Overlaps(b, a) {
			t.Fatalf("Overlaps not symmetric for %v and %v", a, b)
		}
		if !ov {
			apart++
		}
		for range 40 {
			inv := randomInventory(r)
			if sizes.Matches(a, inv) && sizes.Matches(b, inv) {
				witnessed++
				if !ov {
					t.Fatalf("Overlaps says apart, but %v matches both\n a: %v\n b: %v", inv, a, b)
				}
			}
		}
	}
	// The test is only meaningful if both answers occur.
	if apart < 100 || witnessed < 100 {
		t.Fatalf("weak sample: %d pairs apart, %d common matches", apart, witnessed)
	}
}

func TestCheckNewErrors(t *testing.T) {
	existing := []*anvilv1.Size{
		mk("intel-16", con(tCores, 16, 16, "Intel*")),
		mk("amd-16", con(tCores, 16, 16, "AMD*")),
		mk("gpu", con(tGPU, 1, 8, "")),
	}
	tests := []struct {
		name        string
		s           *anvilv1.Size
		wantOverlap []string // sizes named in the overlap error
		wantInvalid string   // substring of a validation error
	}{
		{"gpu counts may meet", mk("amd-32", con(tCores, 32, 32, "AMD*"), con(tGPU, 0, 1, "NVIDIA*")), []string{`"gpu"`}, ""},
		{"apart from all", mk("amd-32-gpu", con(tCores, 32, 32, "AMD*"), con(tGPU, 9, 16, "")), nil, ""},
		{"no gpus is not expressible as a separate size", mk("tiny", con(tCores, 1, 4, "")), []string{`"gpu"`}, ""},
		{"overlaps several", mk("any-16", con(tCores, 16, 16, "")), []string{`"intel-16"`, `"amd-16"`, `"gpu"`}, ""},
		{"invalid", mk("bad", con(tCores, 16, 16, "[")), nil, "model glob"},
		{"nil", nil, nil, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sizes.CheckNew(existing, tt.s)
			switch {
			case tt.wantInvalid != "":
				if err == nil || errors.Is(err, sizes.ErrOverlap) || !strings.Contains(err.Error(), tt.wantInvalid) {
					t.Fatalf("CheckNew = %v, want a validation error with %q", err, tt.wantInvalid)
				}
			case len(tt.wantOverlap) == 0:
				if err != nil {
					t.Fatalf("CheckNew = %v, want nil", err)
				}
			default:
				if !errors.Is(err, sizes.ErrOverlap) {
					t.Fatalf("CheckNew = %v, want ErrOverlap", err)
				}
				for _, id := range tt.wantOverlap {
					if !strings.Contains(err.Error(), id) {
						t.Errorf("error %q does not name %s", err, id)
					}
				}
				for _, s := range existing {
					named := strings.Contains(err.Error(), fmt.Sprintf("%q", s.GetId()))
					if named != sizes.Overlaps(s, tt.s) {
						t.Errorf("error %q names %s: %v, but Overlaps says %v", err, s.GetId(), named, !named)
					}
				}
			}
		})
	}
	if err := sizes.CheckNew(nil, mk("first", con(tCores, 1, 2, ""))); err != nil {
		t.Errorf("first size refused: %v", err)
	}
}
