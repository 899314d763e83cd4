package bmc

import (
	"strings"
	"testing"
)

func TestPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		p, err := NewPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 16 || seen[p] {
			t.Fatalf("password %q: length %d, seen before %v", p, len(p), seen[p])
		}
		seen[p] = true
		if !strings.ContainsAny(p, "ABCDEFGHJKLMNPQRSTUVWXYZ") || !strings.ContainsAny(p, "abcdefghijkmnopqrstuvwxyz") || !strings.ContainsAny(p, "23456789") {
			t.Fatalf("password %q lacks a character class", p)
		}
		for _, r := range p {
			if !strings.ContainsRune(passwordAlphabet, r) {
				t.Fatalf("password %q has %q outside the alphabet", p, r)
			}
		}
	}
}
