package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// SealedPrefix starts every sealed value.
const SealedPrefix = "sealed:v1:"

// ErrSealed is a sealed value that cannot be opened: forged, damaged, or
// sealed under another key.
var ErrSealed = errors.New("cannot open sealed value")

// Sealer encrypts small secrets kept in the store (BMC credentials) with
// AES-256-GCM under a key derived from a controller key and a purpose, so
// that a copy of the database alone reveals none of them.
//
// Layout: SealedPrefix base64url(nonce || ciphertext || tag).
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer derives the purpose's key from secret (at least 16 bytes).
func NewSealer(secret, purpose string) (*Sealer, error) {
	if len(secret) < 16 || purpose == "" {
		return nil, errors.New("sealer needs a secret of at least 16 bytes and a purpose")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("anvil sealed value v1\x00" + purpose))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain; the empty string stays empty.
func (s *Sealer) Seal(plain string) (string, error) {
	if plain == "" {
		return "", nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return SealedPrefix + base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(plain), []byte(SealedPrefix))), nil
}

// Open decrypts a sealed value. A value without SealedPrefix is returned as
// it is (stored before sealing existed); the empty string stays empty.
func (s *Sealer) Open(v string) (string, error) {
	rest, ok := strings.CutPrefix(v, SealedPrefix)
	if !ok {
		return v, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < s.aead.NonceSize()+s.aead.Overhead() {
		return "", fmt.Errorf("%w: malformed", ErrSealed)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(SealedPrefix))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSealed, err)
	}
	return string(plain), nil
}
