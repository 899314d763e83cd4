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
	// BMCInBand: the boot script asks the agent to create an anvil user on
	// the machine's BMC through /dev/ipmi0 and to report it (the default).
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

// AskBMCEnrollment says whether a machine's boot script asks the agent to
// enroll the BMC: under BMCInBand, unless an operator set the machine's
// BMC (known, with a BMC address not enrolled in-band).
func AskBMCEnrollment(p BMCPolicy, known bool, bmcSet, inBand bool) bool {
	return p == BMCInBand && !(known && bmcSet && !inBand)
}

// BMCReport is an in-band BMC enrollment an agent sent on Register.
type BMCReport struct {
	// Held: the registering session is not trusted.
	Held bool
	// OperatorSet: the machine has a BMC address an operator set.
	OperatorSet bool
	// IP is the BMC's LAN address the agent read; User and Password the
	// credential it created.
	IP, User, Password string
}

// BMCVerdict is what to do with a BMCReport: Store it (as Address), or
// not, with the reason either way.
type BMCVerdict struct {
	Store   bool
	Address string
	Reason  string
}

// DecideBMC decides on an in-band BMC enrollment. A credential is stored
// only from a trusted session, under BMCInBand, when no operator set the
// machine's BMC, and with a usable unicast address: anything else is
// refused with its reason, and the machine's BMC stays as it was.
func DecideBMC(r BMCReport, p BMCPolicy) BMCVerdict {
	ip := net.ParseIP(r.IP)
	switch {
	case p != BMCInBand:
		return BMCVerdict{Reason: "the controller's BMC enrollment policy is off"}
	case r.Held:
		return BMCVerdict{Reason: "the session awaits approval; the BMC is enrolled at the machine's next boot after approval"}
	case r.OperatorSet:
		return BMCVerdict{Reason: "an operator set this machine's BMC; that address stays"}
	case r.User == "" || r.Password == "":
		return BMCVerdict{Reason: "the credential is incomplete"}
	case ip == nil || ip.To4() == nil:
		return BMCVerdict{Reason: fmt.Sprintf("the BMC reported no usable IPv4 address (%q)", r.IP)}
	case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.Equal(net.IPv4bcast):
		return BMCVerdict{Reason: fmt.Sprintf("the BMC's address %s is not a unicast host address", ip)}
	}
	addr := url.URL{Scheme: "ipmi", User: url.UserPassword(r.User, r.Password), Host: ip.String()}
	return BMCVerdict{Store: true, Address: addr.String(),
		Reason: "enrolled in-band by the agent"}
}
