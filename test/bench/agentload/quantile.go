package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// histogram is one series of a Prometheus histogram: cumulative counts by
// upper bound (le), +Inf included.
type histogram map[float64]float64

// parseHistogram reads the buckets of metric{method="method"} from the
// Prometheus text format.
func parseHistogram(r io.Reader, metric, method string) (histogram, error) {
	h := histogram{}
	prefix := metric + "_bucket{"
	want := `method="` + method + `"`
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, want) {
			continue
		}
		_, rest, ok := strings.Cut(line, `le="`)
		if !ok {
			return nil, fmt.Errorf("%s: no le in %q", metric, line)
		}
		le, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			return nil, fmt.Errorf("%s: unterminated le in %q", metric, line)
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: le in %q: %w", metric, line, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(rest, "}")), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value in %q: %w", metric, line, err)
		}
		h[bound] += v // summed over servers when several are read into one
	}
	return h, sc.Err()
}

// add adds o's counts to h (replicas' histograms of one fleet).
func (h histogram) add(o histogram) {
	for k, v := range o {
		h[k] += v
	}
}

// sub is h − before: the observations made between two scrapes.
func (h histogram) sub(before histogram) histogram {
	out := histogram{}
	for k, v := range h {
		out[k] = v - before[k]
	}
	return out
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linear within the bucket that holds the rank; in the +Inf bucket,
// the largest finite bound. NaN when there is no observation.
func (h histogram) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(h))
	for k := range h {
		bounds = append(bounds, k)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 || h[bounds[len(bounds)-1]] <= 0 {
		return math.NaN()
	}
	total := h[bounds[len(bounds)-1]]
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		c := h[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			if c == below {
				return b
			}
			return lower + (b-lower)*(rank-below)/(c-below)
		}
		lower, below = b, c
	}
	return lower
}
