// Package sizes matches machines to operator-defined sizes (anvilv1.Size)
// by their hardware inventory, keeps sizes from overlapping so that a
// machine matches at most one, and chooses the disk an install goes to
// ([TargetDisk]). Storage is what the physical disks hold: device-mapper,
// MD, loop and optical devices do not count, and the paths of a multipath
// LUN count once (agent/disks/diskkind). Model globs use path.Match syntax.
// The package is pure: no I/O, no state.
package sizes

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/diskkind"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Unknown is the size id of a machine that matches no size, or several.
const Unknown = "unknown"

// ErrOverlap is wrapped by CheckNew when a new size overlaps existing ones.
var ErrOverlap = errors.New("sizes overlap")

// Short names for the constraint types.
const (
	typeCores   = anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES
	typeMemory  = anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY
	typeStorage = anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE
	typeGPU     = anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU
)

func typeName(t anvilv1.ConstraintType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "CONSTRAINT_TYPE_"))
}

// Validate reports every problem of s, joined: the id must match
// ^[a-z0-9][a-z0-9._-]{0,62}$; there must be at least one constraint, at most
// one per type; each needs a known type, min <= max, max > 0 and a valid
// model glob; a memory constraint takes no glob.
func Validate(s *anvilv1.Size) error {
	if s == nil {
		return errors.New("size is required")
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("size %q: "+format, append([]any{s.GetId()}, args...)...))
	}
	if !anvilv1.ValidID(s.GetId()) {
		bad("id is not valid: want ^[a-z0-9][a-z0-9._-]{0,62}$")
	}
	if len(s.GetConstraints()) == 0 {
		bad("no constraints: at least one is required")
	}
	first := map[anvilv1.ConstraintType]int{}
	for i, c := range s.GetConstraints() {
		if c == nil {
			bad("constraints[%d]: is required", i)
			continue
		}
		switch t := c.GetType(); t {
		case typeCores, typeMemory, typeStorage, typeGPU:
			if j, dup := first[t]; dup {
				bad("constraints[%d].type: %s already constrained by constraints[%d]", i, typeName(t), j)
			} else {
				first[t] = i
			}
		default:
			bad("constraints[%d].type: unknown type %s", i, t)
		}
		if c.GetMax() == 0 {
			bad("constraints[%d].max: max must be > 0", i)
		}
		if c.GetMin() > c.GetMax() {
			bad("constraints[%d].min: min %d > max %d", i, c.GetMin(), c.GetMax())
		}
		if g := c.GetModelGlob(); g != "" {
			if c.GetType() == typeMemory {
				bad("constraints[%d].model_glob: memory has no model; leave the model glob empty", i)
			} else if _, err := path.Match(g, ""); err != nil {
				bad("constraints[%d].model_glob: model glob %q: %w", i, g, err)
			}
		}
	}
	return errors.Join(errs...)
}

// measure is what inv has of the constraint's resource. ok is false when the
// constraint cannot be satisfied whatever the amount: a cores glob that does
// not match the CPU model, or an unknown type.
func measure(c *anvilv1.Constraint, inv *anvilv1.Inventory) (v uint64, ok bool) {
	glob := c.GetModelGlob()
	switch c.GetType() {
	case typeCores:
		if glob != "" && !match(glob, inv.GetCpu().GetModel()) {
			return 0, false
		}
		return uint64(inv.GetCpu().GetCores()), true
	case typeMemory:
		return inv.GetMemory().GetTotalBytes(), true
	case typeStorage:
		for _, d := range diskkind.Physical(inv.GetDisks()) {
			if d.GetRemovable() || (glob != "" && !match(glob, d.GetModel())) {
				continue
			}
			if v += d.GetSizeBytes(); v < d.GetSizeBytes() {
				return math.MaxUint64, true // saturate rather than wrap
			}
		}
		return v, true
	case typeGPU:
		for _, g := range inv.GetGpus() {
			if g != nil && (glob == "" || match(glob, g.GetModel())) {
				v++
			}
		}
		return v, true
	}
	return 0, false
}

// match is path.Match with a malformed pattern matching nothing.
func match(glob, model string) bool {
	ok, err := path.Match(glob, model)
	return err == nil && ok
}

// Matches reports whether inv satisfies every constraint of s: cores is
// inventory.cpu.cores, and its glob must match the CPU model; memory is
// inventory.memory.total_bytes; storage is the total size of the
// non-removable physical disks (kind "disk", or for older agents a name
// that is not a virtual or optical device's; one per WWN) whose model
// matches the glob; gpu is the number of
// GPUs whose model matches the glob. An empty glob matches every model;
// missing inventory fields count as zero. A nil size or one without
// constraints matches nothing.
func Matches(s *anvilv1.Size, inv *anvilv1.Inventory) bool {
	if len(s.GetConstraints()) == 0 {
		return false
	}
	for _, c := range s.GetConstraints() {
		v, ok := measure(c, inv)
		if !ok || v < c.GetMin() || v > c.GetMax() {
			return false
		}
	}
	return true
}

// Match returns the id of the one size inv matches, or Unknown when it
// matches none or several.
func Match(sizes []*anvilv1.Size, inv *anvilv1.Inventory) string {
	id, n := Unknown, 0
	for _, s := range sizes {
		if Matches(s, inv) {
			id, n = s.GetId(), n+1
		}
	}
	if n != 1 {
		return Unknown
	}
	return id
}

// Overlaps reports whether some machine could match both a and b. It errs on
// the side of true: a false answer is a proof that no inventory matches both.
//
// Every pair of constraints of the same type, one from a and one from b, is
// compared; a type constrained by only one of the sizes does not separate
// them (the other size allows any amount of it). The pair separates the
// sizes when:
//
//   - cores: the [min,max] ranges are disjoint, or the CPU-model globs
//     cannot match the same model (see below);
//   - memory: the ranges are disjoint;
//   - storage, gpu: the globs are equal and the ranges are disjoint, or one
//     glob is empty (counts every disk or GPU, so at least as much as the
//     other) and its max is below the other's min. Two different non-empty
//     globs may count different disks or GPUs and never separate.
//
// Two globs can match the same model unless: both are literal (no
// metacharacters) and differ; one is literal and the other does not match
// it; or their literal prefixes (or suffixes) are not prefixes (suffixes) of
// one another, as "Intel*" and "AMD*". An empty glob matches every model.
// A nil size, a size without constraints, or one with a constraint no
// machine can satisfy (min > max, unknown type) overlaps nothing.
func Overlaps(a, b *anvilv1.Size) bool {
	if !satisfiable(a) || !satisfiable(b) {
		return false
	}
	for _, ca := range a.GetConstraints() {
		for _, cb := range b.GetConstraints() {
			if ca.GetType() == cb.GetType() && separates(ca, cb) {
				return false
			}
		}
	}
	return true
}

// satisfiable reports whether some inventory could meet each constraint of s
// taken alone.
func satisfiable(s *anvilv1.Size) bool {
	if len(s.GetConstraints()) == 0 {
		return false
	}
	for _, c := range s.GetConstraints() {
		switch c.GetType() {
		case typeCores, typeMemory, typeStorage, typeGPU:
		default:
			return false
		}
		if c.GetMin() > c.GetMax() {
			return false
		}
	}
	return true
}

// separates reports whether no inventory can meet both constraints, of the
// same type.
func separates(a, b *anvilv1.Constraint) bool {
	disjoint := a.GetMax() < b.GetMin() || b.GetMax() < a.GetMin()
	ga, gb := a.GetModelGlob(), b.GetModelGlob()
	switch a.GetType() {
	case typeCores:
		return disjoint || !globsMayMeet(ga, gb)
	case typeMemory:
		return disjoint
	case typeStorage, typeGPU:
		switch {
		case ga == gb:
			return disjoint
		case ga == "":
			return a.GetMax() < b.GetMin()
		case gb == "":
			return b.GetMax() < a.GetMin()
		}
	}
	return false
}

// globsMayMeet reports whether some model could match both globs; it is
// true unless that is provably impossible.
func globsMayMeet(a, b string) bool {
	if a == "" || b == "" {
		return true
	}
	pa, oka := parseGlob(a)
	pb, okb := parseGlob(b)
	if !oka || !okb {
		return true // malformed: Validate's business
	}
	switch {
	case pa.literal && pb.literal:
		return pa.prefix == pb.prefix
	case pa.literal:
		return match(b, pa.prefix)
	case pb.literal:
		return match(a, pb.prefix)
	}
	return (strings.HasPrefix(pa.prefix, pb.prefix) || strings.HasPrefix(pb.prefix, pa.prefix)) &&
		(strings.HasSuffix(pa.suffix, pb.suffix) || strings.HasSuffix(pb.suffix, pa.suffix))
}

// glob is what every string a pattern matches has in common: its literal
// prefix and suffix (escapes resolved). A literal pattern matches only
// prefix.
type glob struct {
	prefix, suffix string
	literal        bool
}

// parseGlob splits a path.Match pattern into literal characters and
// metacharacters (*, ?, [classes]); ok is false for a malformed pattern.
func parseGlob(p string) (g glob, ok bool) {
	if _, err := path.Match(p, ""); err != nil {
		return glob{}, false
	}
	var lits []string // literal runs, split by metacharacters
	var cur strings.Builder
	meta := false
	flush := func() { lits = append(lits, cur.String()); cur.Reset() }
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
			cur.WriteByte(p[i]) // a valid pattern never ends in a lone backslash
		case '*', '?':
			meta = true
			flush()
		case '[':
			meta = true
			flush()
			// Skip the class: a ']' right after '[' or '[^' is not
			// valid in path.Match, so the first unescaped ']' ends it.
			for i++; p[i] != ']'; i++ {
				if p[i] == '\\' {
					i++
				}
			}
		default:
			cur.WriteByte(p[i])
		}
	}
	flush()
	if !meta {
		return glob{prefix: lits[0], suffix: lits[0], literal: true}, true
	}
	return glob{prefix: lits[0], suffix: lits[len(lits)-1]}, true
}

// CheckNew validates s and checks that it overlaps none of existing. The
// overlap error names every size s overlaps and wraps ErrOverlap. Whether
// s's id is already taken is the caller's concern.
func CheckNew(existing []*anvilv1.Size, s *anvilv1.Size) error {
	if err := Validate(s); err != nil {
		return err
	}
	var ids []string
	for _, e := range existing {
		if Overlaps(e, s) {
			ids = append(ids, fmt.Sprintf("%q", e.GetId()))
		}
	}
	if len(ids) > 0 {
		return fmt.Errorf("size %q overlaps %s (a machine could match both): %w", s.GetId(), strings.Join(ids, ", "), ErrOverlap)
	}
	return nil
}
