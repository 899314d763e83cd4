package pki

import (
	"errors"
	"strings"
	"testing"
)

func TestSealer(t *testing.T) {
	s, err := NewSealer("0123456789abcdef-key", "bmc")
	if err != nil {
		t.Fatal(err)
	}
	const secret = "ipmi://admin:hunter2@10.0.0.5"
	a, err := s.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Seal(secret)
	if !strings.HasPrefix(a, SealedPrefix) || strings.Contains(a, "hunter2") || strings.Contains(a, "admin") || a == b {
		t.Fatalf("sealed %q (again %q): want an opaque, randomised value", a, b)
	}
	if got, err := s.Open(a); err != nil || got != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Another key or purpose cannot open it; a flipped byte is refused.
	other, _ := NewSealer("0123456789abcdef-key", "other")
	if _, err := other.Open(a); !errors.Is(err, ErrSealed) {
		t.Errorf("open under another purpose: %v", err)
	}
	flipped := a[:len(a)-2] + map[bool]string{true: "A", false: "B"}[a[len(a)-2] != 'A'] + a[len(a)-1:]
	if _, err := s.Open(flipped); !errors.Is(err, ErrSealed) {
		t.Errorf("open a damaged value: %v", err)
	}
	for _, bad := range []string{SealedPrefix, SealedPrefix + "!!", SealedPrefix + "AAAA"} {
		if _, err := s.Open(bad); !errors.Is(err, ErrSealed) {
			t.Errorf("Open(%q) = %v", bad, err)
		}
	}
	// Values stored before sealing, and empty ones, pass through.
	if got, err := s.Open("ipmi://admin:pw@192.0.2.10"); err != nil || got != "ipmi://admin:pw@192.0.2.10" {
		t.Errorf("plain value: %q, %v", got, err)
	}
	if got, err := s.Seal(""); err != nil || got != "" {
		t.Errorf("Seal(\"\") = %q, %v", got, err)
	}
	if _, err := NewSealer("short", "bmc"); err == nil {
		t.Error("a short secret was accepted")
	}
}
