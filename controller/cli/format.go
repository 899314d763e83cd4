package cli

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// protoEnum is a generated proto enum type such as anvilv1.MachineState.
type protoEnum interface {
	~int32
	Descriptor() protoreflect.EnumDescriptor
}

// enumPrefix is the part of the value names shared by the whole enum,
// "MACHINE_STATE_" for MachineState, taken from its UNSPECIFIED value.
func enumPrefix(d protoreflect.EnumDescriptor) string {
	if v := d.Values().ByNumber(0); v != nil {
		if p, ok := strings.CutSuffix(string(v.Name()), "UNSPECIFIED"); ok {
			return p
		}
	}
	return ""
}

// enumWords returns the value name without the prefix, lower-case, split at
// underscores: ["pxe", "booting"]. Unknown numbers give nil.
func enumWords(d protoreflect.EnumDescriptor, n protoreflect.EnumNumber) []string {
	v := d.Values().ByNumber(n)
	if v == nil {
		return nil
	}
	name := strings.TrimPrefix(string(v.Name()), enumPrefix(d))
	return strings.Split(strings.ToLower(name), "_")
}

// title renders an enum value for people: "Ready", "PXE Booting"; "" for
// the UNSPECIFIED value.
func title[E protoEnum](e E) string {
	if e == 0 {
		return ""
	}
	words := enumWords(e.Descriptor(), protoreflect.EnumNumber(e))
	if words == nil {
		return strconv.Itoa(int(e))
	}
	for i, w := range words {
		switch w {
		case "pxe", "os", "gpu", "cpu":
			words[i] = strings.ToUpper(w)
		default:
			words[i] = strings.ToUpper(w[:1]) + w[1:]
		}
	}
	return strings.Join(words, " ")
}

// kebab renders an enum value as its command-line spelling: "raw-zstd".
func kebab[E protoEnum](e E) string {
	if e == 0 {
		return ""
	}
	words := enumWords(e.Descriptor(), protoreflect.EnumNumber(e))
	if words == nil {
		return strconv.Itoa(int(e))
	}
	return strings.Join(words, "-")
}

// parseEnum accepts "raw-zstd", "Raw Zstd", "RAW_ZSTD" or the full proto
// name "IMAGE_FORMAT_RAW_ZSTD"; the UNSPECIFIED value is not accepted.
func parseEnum[E protoEnum](s string) (E, error) {
	var zero E
	d := zero.Descriptor()
	norm := strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(strings.TrimSpace(s)))
	prefix := enumPrefix(d)
	if !strings.HasPrefix(norm, prefix) {
		norm = prefix + norm
	}
	if v := d.Values().ByName(protoreflect.Name(norm)); v != nil && v.Number() != 0 {
		return E(v.Number()), nil
	}
	return 0, fmt.Errorf("%q is not one of %s", s, strings.Join(enumChoices[E](), ", "))
}

// enumChoices lists the command-line spellings of every value but
// UNSPECIFIED.
func enumChoices[E protoEnum]() []string {
	var zero E
	vals := zero.Descriptor().Values()
	var out []string
	for i := range vals.Len() {
		if n := vals.Get(i).Number(); n != 0 {
			out = append(out, kebab(E(n)))
		}
	}
	return out
}

// enumFlag is a flag.Value for one enum value.
type enumFlag[E protoEnum] struct{ p *E }

func (f enumFlag[E]) String() string {
	if f.p == nil {
		return ""
	}
	return kebab(*f.p)
}

func (f enumFlag[E]) Set(s string) error {
	v, err := parseEnum[E](s)
	if err != nil {
		return err
	}
	*f.p = v
	return nil
}

// enumListFlag is a repeatable flag.Value collecting enum values; each
// occurrence may also hold a comma-separated list.
type enumListFlag[E protoEnum] struct{ p *[]E }

func (f enumListFlag[E]) String() string {
	if f.p == nil {
		return ""
	}
	var s []string
	for _, e := range *f.p {
		s = append(s, kebab(e))
	}
	return strings.Join(s, ",")
}

func (f enumListFlag[E]) Set(s string) error {
	for part := range strings.SplitSeq(s, ",") {
		v, err := parseEnum[E](part)
		if err != nil {
			return err
		}
		*f.p = append(*f.p, v)
	}
	return nil
}

// Binary (IEC) and decimal (SI) byte units.
const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	tib = 1 << 40
	pib = 1 << 50
	eib = 1 << 60
)

// humanBytes renders n approximately with binary units: "512 B",
// "1.2 GiB", "68 MiB".
func humanBytes(n uint64) string {
	if n < kib {
		return fmt.Sprintf("%d B", n)
	}
	units := []struct {
		size uint64
		name string
	}{{eib, "EiB"}, {pib, "PiB"}, {tib, "TiB"}, {gib, "GiB"}, {mib, "MiB"}, {kib, "KiB"}}
	for _, u := range units {
		if n >= u.size {
			v := float64(n) / float64(u.size)
			if v < 9.95 {
				return fmt.Sprintf("%.1f %s", v, u.name)
			}
			return fmt.Sprintf("%.0f %s", v, u.name)
		}
	}
	panic("unreachable")
}

// exactBytes renders n exactly in the unit, binary or decimal, that gives
// the smallest number: "4GiB", "500G", "1536"; parseBytes reads it back.
func exactBytes(n uint64) string {
	if n == 0 {
		return "0"
	}
	best := strconv.FormatUint(n, 10)
	bestVal := n
	for _, u := range byteUnits() {
		if u.size > 1 && n%u.size == 0 && n/u.size < bestVal {
			bestVal = n / u.size
			best = strconv.FormatUint(bestVal, 10) + u.name
		}
	}
	return best
}

type byteUnit struct {
	name string
	size uint64
}

// byteUnits lists the canonical spellings accepted by parseBytes.
func byteUnits() []byteUnit {
	return []byteUnit{
		{"", 1}, {"B", 1},
		{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
		{"KiB", kib}, {"MiB", mib}, {"GiB", gib}, {"TiB", tib}, {"PiB", pib}, {"EiB", eib},
	}
}

// parseBytes reads a byte count: a plain number of bytes, or a number
// (decimals allowed) with a unit: K/KB, M/MB, G/GB, T/TB, P/PB, E/EB are
// powers of 1000, Ki/KiB ... Ei/EiB powers of 1024; case is ignored.
func parseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	mult, ok := unitSize(unit)
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, K, M, G, T, P, E, or Ki, Mi, Gi, Ti, Pi, Ei, optionally followed by B)", s, unit)
	}
	if !strings.Contains(num, ".") {
		v, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", s, errors.Unwrap(err))
		}
		hi, lo := bits.Mul64(v, mult)
		if hi != 0 {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return lo, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, errors.Unwrap(err))
	}
	v := math.Round(f * float64(mult))
	if v >= math.MaxUint64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return uint64(v), nil
}

func unitSize(unit string) (uint64, bool) {
	u := strings.ToLower(unit)
	if u != "b" && len(u) > 1 {
		u = strings.TrimSuffix(u, "b")
	}
	for _, bu := range byteUnits() {
		name := strings.ToLower(bu.name)
		if name != "b" && len(name) > 1 {
			name = strings.TrimSuffix(name, "b")
		}
		if u == name {
			return bu.size, true
		}
	}
	return 0, false
}

// age renders a duration coarsely, as tables show it: "45s", "12m", "5h",
// "3d".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// since renders the age of ts at now, "" when ts is unset.
func since(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return ""
	}
	return age(now.Sub(ts.AsTime()))
}

// timeAndAge renders "2025-06-01T11:58:00Z (2m ago)", "" when ts is unset.
func timeAndAge(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return ""
	}
	return fmt.Sprintf("%s (%s ago)", formatTime(ts), since(ts, now))
}

// formatTime renders ts in UTC, RFC 3339, "" when unset.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// progressBarWidth is the number of cells in a progress bar.
const progressBarWidth = 20

// progressLine renders a wipe or install progress:
// "[###########.........] 58% 1.2 GiB/2.0 GiB 68 MiB/s ETA 12s".
// Parts that are unknown (total, rate) are left out.
func progressLine(p *anvilv1.Progress) string {
	if p == nil {
		return ""
	}
	done, total, rate := p.GetBytesDone(), p.GetBytesTotal(), p.GetRateBytesPerSecond()
	var parts []string
	if total > 0 {
		frac := min(float64(done)/float64(total), 1)
		filled := int(math.Round(frac * progressBarWidth))
		parts = append(parts,
			"["+strings.Repeat("#", filled)+strings.Repeat(".", progressBarWidth-filled)+"]",
			fmt.Sprintf("%d%%", int(frac*100)),
			humanBytes(done)+"/"+humanBytes(total))
	} else {
		parts = append(parts, humanBytes(done))
	}
	if rate > 0 {
		parts = append(parts, humanBytes(rate)+"/s")
		if total > done {
			secs := min((total-done+rate-1)/rate, math.MaxInt64/uint64(time.Second))
			parts = append(parts, "ETA "+(time.Duration(secs)*time.Second).String())
		}
	}
	return strings.Join(parts, " ")
}

// percent renders the share of p done as "58%", "" when the total is
// unknown.
func percent(p *anvilv1.Progress) string {
	if p.GetBytesTotal() == 0 {
		return ""
	}
	return fmt.Sprintf("%d%%", int(min(float64(p.GetBytesDone())/float64(p.GetBytesTotal()), 1)*100))
}

// truncate shortens s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
