// Package trust is the controller's registration policy, as a pure
// function: given what the controller knows about a machine and how an
// agent authenticated, may the agent take the machine, and is its session
// trusted with the machine's secrets (an allocation's user-data, SSH keys
// and phone-home token, the ATA erase password)?
//
// Nobody on a boot network can prove which board they are: SMBIOS UUIDs
// and MACs are broadcast in the clear, and any client can fetch a boot
// token for them. So the decision rests on what the controller itself
// knows (after Ironic's agent token and MAAS's enrollment):
//
//   - a machine whose trusted agent session is live cannot be taken by a
//     new registration, expected boot or not (a power cycle through the
//     BMC ends the session at once): the attempt is refused;
//   - a boot the controller expects (it freed, reinstalled or
//     power-cycled the machine, or the agent announced a reboot) is
//     trusted once the old session is gone;
//   - an unknown machine is trusted under PolicyAuto and held for an
//     operator under PolicyApprove;
//   - an unexpected boot of a known machine whose session is gone (a power
//     cut, or a spoofer who waited for one) is trusted under PolicyAuto,
//     except while an allocation's secrets are yet to be delivered: then,
//     as under PolicyApprove, it is held;
//   - a session continuing with its own credential keeps the trust it had.
package trust

import (
	"fmt"
	"strings"
)

// Policy is how unknown machines (and unexpected boots) are enrolled.
type Policy string

// The enrollment policies.
const (
	// PolicyAuto enrolls unknown machines at once (the default).
	PolicyAuto Policy = "auto"
	// PolicyApprove holds every new machine, and every unexpected boot,
	// until an operator approves it.
	PolicyApprove Policy = "approve"
)

// ParsePolicy parses "auto" or "approve".
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(strings.ToLower(strings.TrimSpace(s))); p {
	case PolicyAuto, PolicyApprove:
		return p, nil
	}
	return "", fmt.Errorf("enrollment policy %q: want %q or %q", s, PolicyAuto, PolicyApprove)
}

// Kind is how a registration authenticated.
type Kind int

const (
	// BootToken is a per-boot token the boot service minted for this
	// machine's network boot (checked for UUID, MAC, address, expiry and
	// single use before Decide is asked).
	BootToken Kind = iota
	// SharedToken is one of the controller's static boot tokens, which an
	// operator gives to host-mode agents: it vouches for the host.
	SharedToken
	// Credential is the machine's own current credential: the session
	// registers again (the controller restarted, the inventory changed).
	Credential
)

// Registration is what the controller knows when an agent registers.
type Registration struct {
	Kind Kind
	// Known: the machine has a record.
	Known bool
	// Live: its current agent session was seen recently. A held session
	// (Held) protects nothing and does not count.
	Live bool
	// Expected: the controller caused or was told of a boot (ExpectWhy).
	Expected  bool
	ExpectWhy string
	// SecretsPending: the machine is allocated and its image not installed
	// yet, so the session would receive the allocation's secrets.
	SecretsPending bool
	// Held: the machine awaits approval now.
	Held bool
}

// Verdict is the decision.
type Verdict struct {
	// Accept: the registration may take the machine. When false, the
	// attempt is refused and recorded as a security event.
	Accept bool
	// Trusted: the session may receive instructions; otherwise the machine
	// awaits an operator's approval.
	Trusted bool
	// Reason says why, for the event and the refusal.
	Reason string
}

// Decide applies the policy.
func Decide(r Registration, p Policy) Verdict {
	switch {
	case r.Kind == Credential:
		if r.Held {
			return Verdict{Accept: true, Reason: "the session registered again with its credential; it still awaits approval"}
		}
		return Verdict{Accept: true, Trusted: true, Reason: "the session registered again with its credential"}
	case !r.Known && r.Kind == SharedToken:
		return Verdict{Accept: true, Trusted: true, Reason: "new machine enrolled with the controller's boot token (host agent)"}
	case !r.Known && p == PolicyApprove:
		return Verdict{Accept: true, Reason: "new machine: enrollment policy is approve; an operator must approve it"}
	case !r.Known:
		return Verdict{Accept: true, Trusted: true, Reason: "new machine enrolled (enrollment policy auto)"}
	case r.Live && !r.Held:
		return Verdict{Reason: "refused: the machine's agent session is live; another board with the same UUID, or a spoofed registration"}
	case r.Expected:
		return Verdict{Accept: true, Trusted: true, Reason: "expected boot (" + r.ExpectWhy + ")"}
	case r.SecretsPending:
		return Verdict{Accept: true, Reason: "unexpected boot while the allocation's install (user-data, keys, phone-home token) is not delivered: an operator must approve the new session"}
	case r.Held || p == PolicyApprove:
		return Verdict{Accept: true, Reason: "unexpected boot: enrollment policy is approve; an operator must approve the new session"}
	}
	return Verdict{Accept: true, Trusted: true, Reason: "unexpected boot after the previous session ended (enrollment policy auto)"}
}
