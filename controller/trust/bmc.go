package trust

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// BMCPolicy is whether agents enroll their machine's BMC in-band.
type BMCPolicy string

// The BMC enrollment policies.
const (
	// BMCInBand: a trusted agent that found its machine's BMC through
	// /dev/ipmi0 is told to create an anvil user on it with a password the
	// controller chose (the default).
	BMCInBand BMCPolicy = "in-band"
	// BMCOff: agents never touch BMC users; operators set BMC addresses
	// (SetMachineBMC) themselves.
	BMCOff BMCPolicy = "off"
)

// ParseBMCPolicy parses "in-band" or "off".
func ParseBMCPolicy(s string) (BMCPolicy, error) {
	switch p := BMCPolicy(strings.ToLower(strings.TrimSpace(s))); p {
	case BMCInBand, BMCOff:
		return p, nil
	}
	return "", fmt.Errorf("BMC enrollment policy %q: want %q or %q", s, BMCInBand, BMCOff)
}

// BMCReport is what a registration says of the machine's BMC, and how it
// came.
type BMCReport struct {
	// Found: the agent read the BMC in-band (inventory.bmc is set).
	Found bool
	// FreshBoot: the registration opens a new agent boot (a boot token),
	// not a session continuing with its own credential.
	FreshBoot bool
	// Held: the registering session is not trusted.
	Held bool
	// OperatorSet: the machine has a BMC address an operator set.
	OperatorSet bool
	// IP is the BMC's LAN address the agent read.
	IP string
}

// BMCVerdict says whether to have the agent enroll the BMC, and why
// (Reason is worth an event when Tell is set: a refusal an operator should
// see).
type BMCVerdict struct {
	Enroll bool
	Tell   bool
	Reason string
}

// DecideBMC decides whether a registration's agent enrolls the machine's
// BMC in-band. Only a trusted session from a fresh boot, under BMCInBand,
// of a machine whose BMC no operator set and whose BMC reported a usable
// unicast IPv4 address, is asked; the BMC's password is then changed only
// on the controller's word, never by an agent on its own (a held session
// leaves the BMC untouched).
func DecideBMC(r BMCReport, p BMCPolicy) BMCVerdict {
	switch {
	case !r.Found:
		return BMCVerdict{Reason: "the agent found no in-band BMC"}
	case p != BMCInBand:
		return BMCVerdict{Reason: "the controller's BMC enrollment policy is off"}
	case r.OperatorSet:
		return BMCVerdict{Reason: "an operator set this machine's BMC; that address stays"}
	case !r.FreshBoot:
		return BMCVerdict{Reason: "enrolled at the agent's boot, not again in the same boot"}
	case r.Held:
		return BMCVerdict{Tell: true, Reason: "the session awaits approval; the BMC is enrolled at the machine's next boot after approval"}
	}
	ip := net.ParseIP(r.IP)
	switch {
	case ip == nil || ip.To4() == nil:
		return BMCVerdict{Tell: true, Reason: fmt.Sprintf("the BMC reported no usable IPv4 address (%q)", r.IP)}
	case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.Equal(net.IPv4bcast):
		return BMCVerdict{Tell: true, Reason: fmt.Sprintf("the BMC's address %s is not a routable unicast address", ip)}
	}
	return BMCVerdict{Enroll: true, Reason: "enrolled in-band by the agent"}
}

// InBandAddress is the ipmi:// address of an in-band enrolled BMC at ip
// (reserved characters of the credential escaped).
func InBandAddress(user, password, ip string) string {
	u := url.URL{Scheme: "ipmi", User: url.UserPassword(user, password), Host: ip}
	return u.String()
}
