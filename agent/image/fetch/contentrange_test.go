package fetch

import (
	"fmt"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                    string
		first, last, complete int64
		ok                    bool
	}{
		{"bytes 0-499/1234", 0, 499, 1234, true},
		{"bytes 734-1233/1234", 734, 1233, 1234, true},
		{"BYTES 0-0/1", 0, 0, 1, true},
		{"bytes 42-1233/*", 42, 1233, -1, true},
		{"bytes */1234", -1, -1, 1234, true},
		{"bytes */0", -1, -1, 0, true},
		{"bytes */*", 0, 0, 0, false},
		{"bytes 0-1234/1234", 0, 0, 0, false}, // past the end
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes +1-4/10", 0, 0, 0, false},
		{"bytes 1- 4/10", 0, 0, 0, false},
		{"bytes 1-4", 0, 0, 0, false},
		{"bytes 1/10", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/*", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		first, last, complete, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseContentRange(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (first != tc.first || last != tc.last || complete != tc.complete) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d; want %d, %d, %d", tc.in, first, last, complete, tc.first, tc.last, tc.complete)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-499/1234", "bytes */1234", "bytes 42-1233/*", "bytes 5-4/10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, complete, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 {
			if first != -1 || last != -1 || complete < 0 {
				t.Fatalf("%q: unsatisfied form %d, %d, %d", s, first, last, complete)
			}
			return
		}
		if last < first || (complete >= 0 && last >= complete) {
			t.Fatalf("%q: accepted %d-%d/%d", s, first, last, complete)
		}
		// What we accept we would also have produced, modulo case and
		// leading zeroes.
		want := fmt.Sprintf("bytes %d-%d/%d", first, last, complete)
		if complete < 0 {
			want = fmt.Sprintf("bytes %d-%d/*", first, last)
		}
		if a, b, c, err := parseContentRange(want); err != nil || a != first || b != last || c != complete {
			t.Fatalf("%q: round trip through %q failed", s, want)
		}
	})
}
