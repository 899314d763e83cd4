package sizes

import (
	"errors"
	"strings"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

const (
	cores   = anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES
	memory  = anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY
	storage = anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE
	gpu     = anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU
	GiB     = 1 << 30
)

func c(t anvilv1.ConstraintType, min, max uint64, glob string) *anvilv1.Constraint {
	return &anvilv1.Constraint{Type: t, Min: min, Max: max, ModelGlob: glob}
}

func size(id string, cs ...*anvilv1.Constraint) *anvilv1.Size {
	return &anvilv1.Size{Id: id, Constraints: cs}
}

func inv() *anvilv1.Inventory {
	return &anvilv1.Inventory{
		Cpu:    &anvilv1.CPU{Model: "AMD EPYC 7543 32-Core Processor", Cores: 32},
		Memory: &anvilv1.Memory{TotalBytes: 256 * GiB},
		Disks: []*anvilv1.Disk{
			{Model: "SAMSUNG MZQL2960", SizeBytes: 960 * GiB},
			{Model: "SAMSUNG MZQL2960", SizeBytes: 960 * GiB},
			{Model: "Cruzer USB", SizeBytes: 32 * GiB, Removable: true},
		},
		Gpus: []*anvilv1.GPU{{Model: "NVIDIA A100"}, {Model: "NVIDIA A100"}},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    *anvilv1.Size
		want string // substring of the error; "" for valid
	}{
		{"valid", size("c1", c(cores, 8, 64, "AMD*"), c(memory, 1, 512*GiB, "")), ""},
		{"nil", nil, "required"},
		{"bad id", size("C 1", c(cores, 1, 2, "")), "not valid"},
		{"no constraints", size("c1"), "no constraints"},
		{"min > max", size("c1", c(cores, 8, 4, "")), "min 8 > max 4"},
		{"max zero", size("c1", c(cores, 0, 0, "")), "max must be > 0"},
		{"bad glob", size("c1", c(cores, 1, 2, "[")), "model glob"},
		{"memory glob", size("c1", c(memory, 1, 2, "x")), "memory has no model"},
		{"duplicate type", size("c1", c(cores, 1, 2, ""), c(cores, 3, 4, "")), "already constrained"},
		{"unknown type", size("c1", c(99, 1, 2, "")), "unknown type"},
	} {
		err := Validate(tc.s)
		if tc.want == "" && err != nil {
			t.Errorf("%s: unexpected error %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    *anvilv1.Size
		inv  *anvilv1.Inventory
		want bool
	}{
		{"cores in range", size("a", c(cores, 16, 32, "")), inv(), true},
		{"cores above max", size("a", c(cores, 1, 31, "")), inv(), false},
		{"cores glob matches model", size("a", c(cores, 1, 64, "AMD EPYC*")), inv(), true},
		{"cores glob rejects model", size("a", c(cores, 1, 64, "Intel*")), inv(), false},
		{"memory exact", size("a", c(memory, 256*GiB, 256*GiB, "")), inv(), true},
		{"memory too small", size("a", c(memory, 512*GiB, 1024*GiB, "")), inv(), false},
		{"storage sums non-removable disks", size("a", c(storage, 1920*GiB, 1920*GiB, "")), inv(), true},
		{"storage glob selects disks", size("a", c(storage, 1, 100*GiB, "Cruzer*")), inv(), false},
		{"gpu count", size("a", c(gpu, 2, 2, "NVIDIA A100")), inv(), true},
		{"gpu glob counts none", size("a", c(gpu, 1, 8, "*H100*")), inv(), false},
		{"all must hold", size("a", c(cores, 1, 64, ""), c(gpu, 4, 8, "")), inv(), false},
		{"nil inventory counts zero", size("a", c(gpu, 0, 1, "")), nil, true},
		{"nil inventory has no cores", size("a", c(cores, 1, 2, "")), nil, false},
		{"size without constraints matches nothing", size("a"), inv(), false},
	} {
		if got := Matches(tc.s, tc.inv); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	small := size("small", c(cores, 1, 16, ""))
	big := size("big", c(cores, 17, 64, ""))
	gpuBox := size("gpu", c(gpu, 1, 8, ""))
	if got := Match([]*anvilv1.Size{small, big}, inv()); got != "big" {
		t.Errorf("one match: %q, want big", got)
	}
	if got := Match([]*anvilv1.Size{small}, inv()); got != Unknown {
		t.Errorf("no match: %q, want unknown", got)
	}
	if got := Match([]*anvilv1.Size{big, gpuBox}, inv()); got != Unknown {
		t.Errorf("two matches: %q, want unknown", got)
	}
	if got := Match(nil, inv()); got != Unknown {
		t.Errorf("no sizes: %q, want unknown", got)
	}
}

func TestOverlaps(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *anvilv1.Size
		want bool
	}{
		{"disjoint cores", size("a", c(cores, 1, 16, "")), size("b", c(cores, 17, 32, "")), false},
		{"touching cores", size("a", c(cores, 1, 16, "")), size("b", c(cores, 16, 32, "")), true},
		{"different types only", size("a", c(cores, 1, 16, "")), size("b", c(memory, 1, 2, "")), true},
		{"one disjoint type separates", size("a", c(cores, 1, 64, ""), c(memory, 1, 64*GiB, "")), size("b", c(cores, 1, 64, ""), c(memory, 65*GiB, 128*GiB, "")), false},
		{"different literal cpu models", size("a", c(cores, 1, 64, "AMD EPYC 7543")), size("b", c(cores, 1, 64, "AMD EPYC 7313")), false},
		{"glob covers literal", size("a", c(cores, 1, 64, "AMD*")), size("b", c(cores, 1, 64, "AMD EPYC 7313")), true},
		{"glob misses literal", size("a", c(cores, 1, 64, "Intel*")), size("b", c(cores, 1, 64, "AMD EPYC 7313")), false},
		{"two globs: conservative", size("a", c(cores, 1, 64, "AMD*")), size("b", c(cores, 1, 64, "*7313")), true},
		{"gpu ranges disjoint, same devices", size("a", c(gpu, 0, 0, "")), size("b", c(gpu, 1, 8, "")), false},
		{"gpu ranges disjoint, different devices", size("a", c(gpu, 1, 1, "*A100*")), size("b", c(gpu, 0, 0, "*H100*")), true},
		{"storage disjoint same glob", size("a", c(storage, 1, 100, "S*")), size("b", c(storage, 200, 300, "S*")), false},
	} {
		if got := Overlaps(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: Overlaps(a, b) = %v, want %v", tc.name, got, tc.want)
		}
		if got := Overlaps(tc.b, tc.a); got != tc.want {
			t.Errorf("%s: Overlaps(b, a) = %v, want %v (not symmetric)", tc.name, got, tc.want)
		}
	}
}

// Overlaps must never say "apart" for two sizes some machine matches both.
func TestOverlapsIsSoundOnSamples(t *testing.T) {
	sizes := []*anvilv1.Size{
		size("a", c(gpu, 1, 1, "*A100*")), size("b", c(gpu, 0, 0, "*H100*")),
		size("c", c(cores, 16, 32, "AMD*")), size("d", c(cores, 32, 64, "")),
		size("e", c(storage, 1000*GiB, 2000*GiB, "SAMSUNG*")), size("f", c(storage, 1, 1500*GiB, "")),
	}
	for _, x := range sizes {
		for _, y := range sizes {
			if x != y && Matches(x, inv()) && Matches(y, inv()) && !Overlaps(x, y) {
				t.Errorf("%s and %s both match the sample machine but Overlaps says no", x.Id, y.Id)
			}
		}
	}
}

func TestCheckNew(t *testing.T) {
	existing := []*anvilv1.Size{size("small", c(cores, 1, 16, "")), size("mid", c(cores, 17, 32, ""))}
	if err := CheckNew(existing, size("big", c(cores, 33, 64, ""))); err != nil {
		t.Errorf("non-overlapping size refused: %v", err)
	}
	err := CheckNew(existing, size("wide", c(cores, 8, 24, "")))
	if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "small") || !strings.Contains(err.Error(), "mid") {
		t.Errorf("overlapping size: %v, want ErrOverlap naming small and mid", err)
	}
	if err := CheckNew(existing, size("bad", c(cores, 9, 1, ""))); err == nil || errors.Is(err, ErrOverlap) {
		t.Errorf("invalid size: %v, want a validation error", err)
	}
}
