package bmc

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
)

// InBandUser is the BMC user in-band enrollment creates on a machine's BMC
// (agent/bmcenroll) and the controller logs in as.
const InBandUser = "anvil"

// passwordAlphabet avoids characters BMC web interfaces and URL parsers
// trip on.
const passwordAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// Password returns a fresh random password of 16 characters (about 93
// bits) with at least one upper-case letter, one lower-case letter and one
// digit, which BMCs with password rules ask for.
func NewPassword() (string, error) {
	for {
		b := make([]byte, 16)
		for i := range b {
			n, err := rand.Int(rand.Reader, big.NewInt(int64(len(passwordAlphabet))))
			if err != nil {
				return "", fmt.Errorf("random BMC password: %w", err)
			}
			b[i] = passwordAlphabet[n.Int64()]
		}
		p := string(b)
		if strings.ContainsAny(p, "ABCDEFGHJKLMNPQRSTUVWXYZ") && strings.ContainsAny(p, "abcdefghijkmnopqrstuvwxyz") && strings.ContainsAny(p, "23456789") {
			return p, nil
		}
	}
}
