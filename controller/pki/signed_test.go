package pki

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSignerRoundTripAndRefusals(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	boot, err := NewSigner("0123456789abcdef-secret", "boot", "anvb_")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := boot.Sign(now.Add(time.Hour), "uuid-1", "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "anvb_") || !boot.Is(tok) {
		t.Errorf("token %q lacks its prefix", tok)
	}
	got, err := boot.Verify(tok, now)
	if err != nil || !slices.Equal(got, []string{"uuid-1", "52:54:00:00:00:01"}) {
		t.Fatalf("Verify = %q, %v", got, err)
	}
	forever, _ := boot.Sign(time.Time{}, "x")
	if _, err := boot.Verify(forever, now.Add(100*365*24*time.Hour)); err != nil {
		t.Errorf("token without expiry: %v", err)
	}

	other, _ := NewSigner("0123456789abcdef-secret", "phone-home", "anvb_")
	otherSecret, _ := NewSigner("another-secret-0123456789", "boot", "anvb_")
	p64, m64, _ := strings.Cut(strings.TrimPrefix(tok, "anvb_"), ".")
	flipped := []byte(m64)
	flipped[3] ^= 1
	cases := []struct {
		name string
		s    *Signer
		tok  string
		at   time.Time
	}{
		{"expired", boot, tok, now.Add(time.Hour)},
		{"other purpose", other, tok, now},
		{"other secret", otherSecret, tok, now},
		{"tampered payload", boot, "anvb_" + p64 + "A." + m64, now},
		{"tampered mac", boot, "anvb_" + p64 + "." + string(flipped), now},
		{"no signature", boot, "anvb_" + p64, now},
		{"wrong prefix", boot, "anv_" + p64 + "." + m64, now},
		{"not base64", boot, "anvb_!!!.???", now},
		{"empty", boot, "", now},
	}
	for _, c := range cases {
		if f, err := c.s.Verify(c.tok, c.at); !errors.Is(err, ErrBadSignedToken) {
			t.Errorf("%s: Verify = %q, %v; want ErrBadSignedToken", c.name, f, err)
		}
	}
	if _, err := boot.Sign(now, "a\x00b"); err == nil {
		t.Error("a field with NUL was signed")
	}
	if _, err := NewSigner("short", "boot", "anvb_"); err == nil {
		t.Error("a short secret was accepted")
	}
}

func FuzzSignerVerify(f *testing.F) {
	s, err := NewSigner("0123456789abcdef-secret", "boot", "anvb_")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := s.Sign(time.Unix(2e9, 0), "uuid")
	f.Add(good)
	f.Add("anvb_.")
	f.Add("anvb_AAAA.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		fields, err := s.Verify(tok, time.Unix(1e9, 0))
		if err == nil && tok != good {
			// A different string can only verify if it decodes to the same
			// payload and MAC (base64 padding bits); it must carry the same fields.
			if !slices.Equal(fields, []string{"uuid"}) {
				t.Fatalf("forged token %q verified with %q", tok, fields)
			}
		}
	})
}
