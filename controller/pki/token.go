package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenPrefix starts every token made by NewToken, so that a leaked token is
// recognizable (and greppable by secret scanners).
const TokenPrefix = "anv_"

// NewToken returns TokenPrefix followed by 32 random bytes in unpadded
// base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashToken returns the SHA-256 of tok, the form in which tokens are stored.
func HashToken(tok string) []byte {
	sum := sha256.Sum256([]byte(tok))
	return sum[:]
}

// TokenMatches reports in constant time whether tok hashes to hash.
func TokenMatches(hash []byte, tok string) bool {
	return subtle.ConstantTimeCompare(HashToken(tok), hash) == 1
}

// EnsureTokenFile returns the token stored in path, or creates path (mode
// 0600, parent directories 0700) holding a new token and reports created.
// The file appears atomically and is never overwritten: of two concurrent
// callers, both return the token that won.
func EnsureTokenFile(path string) (token string, created bool, err error) {
	if tok, err := ReadTokenFile(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, false, err
	}
	tok, err := NewToken()
	if err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("create token directory: %w", err)
	}
	tmp, err := createTemp(path, []byte(tok+"\n"), 0o600)
	if err != nil {
		return "", false, fmt.Errorf("write token file %s: %w", path, err)
	}
	defer os.Remove(tmp)
	// link(2) fails when path exists, unlike rename(2).
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			tok, err := ReadTokenFile(path)
			return tok, false, err
		}
		return "", false, fmt.Errorf("create token file %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// ReadTokenFile returns the token in path without surrounding white space;
// an empty file is an error.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}
