package pki

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadSignedToken is a signed token that is malformed, forged, for
// another purpose or expired.
var ErrBadSignedToken = errors.New("invalid signed token")

// Signer mints and checks stateless tokens for one purpose: the fields it
// carries and an expiry, authenticated with HMAC-SHA256 (RFC 2104) under a
// key derived from a controller secret and the purpose, so a token minted
// for one purpose never verifies for another. The boot service hands a
// short-lived boot token to each network-booting machine this way, and the
// installed OS phones home with a token bound to its allocation.
//
// Layout: PREFIX base64url(exp "\x00" field "\x00" field ...) "." base64url(mac).
type Signer struct {
	prefix string
	key    []byte
}

// NewSigner derives the purpose's key from secret. prefix starts every
// token (e.g. "anvb_" for boot tokens), so leaked tokens are recognisable.
func NewSigner(secret, purpose, prefix string) (*Signer, error) {
	if len(secret) < 16 {
		return nil, errors.New("signer secret must be at least 16 bytes")
	}
	if purpose == "" || prefix == "" {
		return nil, errors.New("signer needs a purpose and a prefix")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("anvil signed token v1\x00" + purpose))
	return &Signer{prefix: prefix, key: m.Sum(nil)}, nil
}

// Sign returns a token carrying fields, valid until exp (the zero time:
// forever). Fields must not contain NUL.
func (s *Signer) Sign(exp time.Time, fields ...string) (string, error) {
	var e int64
	if !exp.IsZero() {
		e = exp.Unix()
	}
	parts := []string{strconv.FormatInt(e, 10)}
	for _, f := range fields {
		if strings.ContainsRune(f, 0) {
			return "", fmt.Errorf("token field %q contains NUL", f)
		}
		parts = append(parts, f)
	}
	payload := []byte(strings.Join(parts, "\x00"))
	return s.prefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), nil
}

// Verify checks tok at now and returns its fields.
func (s *Signer) Verify(tok string, now time.Time) ([]string, error) {
	rest, ok := strings.CutPrefix(tok, s.prefix)
	if !ok {
		return nil, fmt.Errorf("%w: not a %s token", ErrBadSignedToken, s.prefix)
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, fmt.Errorf("%w: no signature", ErrBadSignedToken)
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	mac, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: not base64url", ErrBadSignedToken)
	}
	if !hmac.Equal(mac, s.mac(payload)) {
		return nil, fmt.Errorf("%w: bad signature", ErrBadSignedToken)
	}
	parts := strings.Split(string(payload), "\x00")
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: bad expiry", ErrBadSignedToken)
	}
	if exp != 0 && now.Unix() >= exp {
		return nil, fmt.Errorf("%w: expired at %s", ErrBadSignedToken, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return parts[1:], nil
}

// Is reports whether tok looks like one of this signer's tokens.
func (s *Signer) Is(tok string) bool { return strings.HasPrefix(tok, s.prefix) }

func (s *Signer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(payload)
	return m.Sum(nil)
}
