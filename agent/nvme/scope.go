package nvme

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Scope is how much of the NVM subsystem an erase command reaches.
type Scope int

// Scopes.
const (
	// ScopeNamespace: only the namespace the command names.
	ScopeNamespace Scope = iota
	// ScopeSubsystem: every namespace of the NVM subsystem. Sanitize always
	// (NVMe 2.0 §8.21: it alters all user data in the NVM subsystem); Format
	// NVM when FNA bit 0 (format applies to all namespaces) or bit 1 (secure
	// erase applies to all namespaces) is set, or when it names NSID
	// FFFFFFFFh.
	ScopeSubsystem
)

func (s Scope) String() string {
	if s == ScopeSubsystem {
		return "every namespace of the NVM subsystem"
	}
	return "this namespace only"
}

// Peer is one namespace of the NVM subsystem and what the erase in
// progress may do to it.
type Peer struct {
	NSID uint32
	// Path is the namespace's block device; empty when the kernel shows
	// none for it (an active NSID without a block device).
	Path string
	// Selected: this erase was asked to erase the namespace.
	Selected bool
	// Protected: the namespace must never be erased (a protect marker).
	Protected bool
}

func (p Peer) String() string {
	name := fmt.Sprintf("nsid %d", p.NSID)
	if p.Path != "" {
		name = fmt.Sprintf("%s (nsid %d)", p.Path, p.NSID)
	}
	switch {
	case p.Protected:
		return name + " is protected"
	case !p.Selected:
		return name + " is not selected for erase"
	}
	return name
}

// FNA bits (NVMe 2.0 Fig. 275, byte 524).
const (
	fnaFormatAll = 1 << 0 // format (excluding secure erase) applies to all namespaces
	fnaSecureAll = 1 << 1 // a secure erase as part of a format applies to all namespaces
	fnaCrypto    = 1 << 2 // cryptographic erase supported as part of a format
)

// FormatScope is the scope of a Format NVM with a secure erase setting on
// one namespace: the subsystem when FNA bit 0 or bit 1 is set.
func (c Controller) FormatScope() Scope {
	if c.FNA&(fnaFormatAll|fnaSecureAll) != 0 {
		return ScopeSubsystem
	}
	return ScopeNamespace
}

// Errors of DecideErase.
var (
	// ErrWouldEraseOthers: every erase the controller offers would also
	// erase namespaces that are protected or not selected.
	ErrWouldEraseOthers = errors.New("nvme: the controller's erase would also destroy other namespaces")
	// ErrTargetProtected: the namespace to erase is itself protected.
	ErrTargetProtected = errors.New("nvme: the namespace to erase is protected")
)

// DecideErase picks the erase of namespace target (identified as ns) on
// controller c, given every namespace of the NVM subsystem (peers, the
// target among them or not). The strongest erase is chosen among those
// whose reach is allowed: sanitize crypto erase, sanitize block erase,
// Format NVM with cryptographic erase (FNA bit 2), Format NVM with user
// data erase. A sanitize, or a format whose FNA makes it reach every
// namespace, is allowed only when every peer is selected and none is
// protected; otherwise the per-namespace Format NVM is used when FNA bits
// 0 and 1 are clear, and failing that the error (ErrWouldEraseOthers)
// names the namespaces it would destroy. The choice rests on SANICAP, FNA
// and OACS only: some controllers (QEMU's) accept a SES they do not
// advertise. A format keeps the namespace's current LBA format.
func DecideErase(c Controller, ns Namespace, target uint32, peers []Peer) (Plan, error) {
	if target == 0 || target == 0xffffffff {
		return Plan{}, fmt.Errorf("nvme: erase of nsid %#x: not a single namespace", target)
	}
	var others []Peer
	for _, p := range peers {
		if p.NSID == target {
			if p.Protected {
				return Plan{}, fmt.Errorf("%w: %s", ErrTargetProtected, p)
			}
			continue
		}
		if !p.Selected || p.Protected {
			others = append(others, p)
		}
	}
	wide := len(others) == 0
	format := func(crypto bool, scope Scope) Plan {
		if crypto {
			return Plan{Method: "nvme-format-crypto", Crypto: true, Scope: scope, Command: FormatNVM(target, ns.CurrentFormat(), SESCryptoErase)}
		}
		return Plan{Method: "nvme-format-user-data", Scope: scope, Command: FormatNVM(target, ns.CurrentFormat(), SESUserData)}
	}
	fscope := c.FormatScope()
	switch {
	case wide && c.SanitizeCrypto():
		return Plan{Method: "nvme-sanitize-crypto", Crypto: true, Scope: ScopeSubsystem, Command: Sanitize(SanitizeCryptoErase, false)}, nil
	case wide && c.SanitizeBlock():
		return Plan{Method: "nvme-sanitize-block", Scope: ScopeSubsystem, Command: Sanitize(SanitizeBlockErase, false)}, nil
	case c.FormatSupported() && (wide || fscope == ScopeNamespace):
		return format(c.CryptoFormat(), fscope), nil
	}
	caps := fmt.Sprintf("OACS %#04x, FNA %#02x, SANICAP %#08x", c.OACS, c.FNA, c.SANICAP)
	if !c.SanitizeCrypto() && !c.SanitizeBlock() && !c.FormatSupported() {
		return Plan{}, fmt.Errorf("%w (%s)", ErrNoHardwareErase, caps)
	}
	names := make([]string, len(others))
	for i, p := range others {
		names[i] = p.String()
	}
	return Plan{}, fmt.Errorf("%w: erasing nsid %d by sanitize or format reaches every namespace of the NVM subsystem, and %s; no per-namespace erase (%s)",
		ErrWouldEraseOthers, target, strings.Join(names, ", "), caps)
}

// IdentifyActiveNamespaces is Identify with CNS 02h: the active NSIDs
// greater than after, in increasing order (NVMe 2.0 Fig. 273).
func IdentifyActiveNamespaces(after uint32) Command {
	return Command{Opcode: OpIdentify, NSID: after, DataLen: IdentifyDataSize, CDW10: 0x02}
}

// ParseNamespaceList parses a Namespace List (NVMe 2.0 §4.4.2): up to 1024
// little-endian NSIDs, ending at the first zero. full reports a list with
// no zero entry: more NSIDs may follow the last one.
func ParseNamespaceList(b []byte) (ids []uint32, full bool, err error) {
	if len(b) < IdentifyDataSize {
		return nil, false, fmt.Errorf("%w: namespace list is %d bytes, want %d", ErrShort, len(b), IdentifyDataSize)
	}
	for i := 0; i < IdentifyDataSize; i += 4 {
		id := binary.LittleEndian.Uint32(b[i:])
		if id == 0 {
			return ids, false, nil
		}
		if id == 0xffffffff || (len(ids) > 0 && id <= ids[len(ids)-1]) {
			return nil, false, fmt.Errorf("nvme: namespace list entry %d is nsid %#x after %v: not increasing", i/4, id, ids)
		}
		ids = append(ids, id)
	}
	return ids, true, nil
}

// MergePeers joins the namespaces the kernel shows (with their block
// devices) and the controller's active NSIDs: an active NSID without a
// block device becomes a peer without a path (never selected).
func MergePeers(known []Peer, active []uint32) []Peer {
	out := slices.Clone(known)
	for _, id := range active {
		if !slices.ContainsFunc(out, func(p Peer) bool { return p.NSID == id }) {
			out = append(out, Peer{NSID: id})
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return int(int64(a.NSID) - int64(b.NSID)) })
	return out
}
