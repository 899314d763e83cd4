// Package lldp reads the Link Layer Discovery Protocol (IEEE 802.1AB-2016)
// frames a switch sends on each of its ports, so the agent's inventory can
// say which switch port every NIC is cabled to.
//
// [Parse] decodes one Ethernet frame (EtherType 0x88cc, also behind 802.1Q
// or 802.1ad tags) into an [anvilv1.LLDPNeighbor]: the mandatory Chassis
// ID, Port ID and Time To Live TLVs (clause 8.5.2–8.5.4), Port Description,
// System Name, System Description and Management Address (8.5.5–8.5.9), and
// the IEEE 802.1 organizationally specific Port VLAN ID TLV (OUI 00-80-C2,
// subtype 1, Annex D.2.1). Every length is checked against the standard's
// bounds and against the bytes left; a malformed frame gives an error
// wrapping [ErrMalformed] (or [ErrNotLLDP]), never a panic. Parse is pure.
//
// A [Collector] keeps the latest neighbour per interface, chassis and port
// and waits, within bounds, until the interfaces have heard one; on Linux,
// [Collector.Listen] feeds it from one AF_PACKET socket per interface
// (lldp_linux.go). No cgo, no libpcap.
package lldp

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// EtherType is LLDP's Ethernet type (IEEE 802.1AB-2016 clause 7.2).
const EtherType = 0x88cc

// NearestBridge is the group MAC address LLDP agents send to by default
// (01-80-C2-00-00-0E, IEEE 802.1AB-2016 table 7-1), which bridges never
// forward.
var NearestBridge = [6]byte{0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e}

var (
	// ErrNotLLDP is returned for an Ethernet frame of another EtherType.
	ErrNotLLDP = errors.New("not an LLDP frame")
	// ErrMalformed is returned for a frame that breaks IEEE 802.1AB's
	// encoding rules (a length out of bounds, a missing mandatory TLV).
	ErrMalformed = errors.New("malformed LLDPDU")
)

// TLV types (IEEE 802.1AB-2016 table 8-1).
const (
	tlvEnd               = 0
	tlvChassisID         = 1
	tlvPortID            = 2
	tlvTTL               = 3
	tlvPortDescription   = 4
	tlvSystemName        = 5
	tlvSystemDescription = 6
	tlvManagementAddress = 8
	tlvOrgSpecific       = 127
)

// ieee8021OUI is the IEEE 802.1 organizationally unique identifier;
// subtype 1 of its TLVs is the Port VLAN ID (Annex D.2.1).
var ieee8021OUI = [3]byte{0x00, 0x80, 0xc2}

const subtypePortVLANID = 1

var tlvNames = map[int]string{
	tlvEnd: "End Of LLDPDU", tlvChassisID: "Chassis ID", tlvPortID: "Port ID", tlvTTL: "Time To Live",
	tlvPortDescription: "Port Description", tlvSystemName: "System Name", tlvSystemDescription: "System Description",
	7: "System Capabilities", tlvManagementAddress: "Management Address", tlvOrgSpecific: "Organizationally Specific",
}

func tlvName(t int) string {
	if n, ok := tlvNames[t]; ok {
		return fmt.Sprintf("%s TLV (type %d)", n, t)
	}
	return fmt.Sprintf("TLV type %d", t)
}

// Chassis ID subtypes (table 8-2) and Port ID subtypes (table 8-3), by the
// names the inventory uses.
var (
	chassisSubtypes = [...]string{1: "chassis-component", 2: "interface-alias", 3: "port-component", 4: "mac", 5: "network-address", 6: "interface-name", 7: "local"}
	portSubtypes    = [...]string{1: "interface-alias", 2: "port-component", 3: "mac", 4: "network-address", 5: "interface-name", 6: "agent-circuit-id", 7: "local"}
)

// Parse decodes an Ethernet frame carrying an LLDPDU, untagged or behind
// up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, 0x9100).
func Parse(frame []byte) (*anvilv1.LLDPNeighbor, error) {
	if len(frame) < 14 {
		return nil, fmt.Errorf("ethernet frame of %d bytes, shorter than its 14-byte header: %w", len(frame), ErrMalformed)
	}
	off := 12
	etype := binary.BigEndian.Uint16(frame[off:])
	for tags := 0; etype == 0x8100 || etype == 0x88a8 || etype == 0x9100; tags++ {
		if tags == 2 {
			return nil, fmt.Errorf("ethernet frame with more than two VLAN tags: %w", ErrNotLLDP)
		}
		off += 4
		if len(frame) < off+2 {
			return nil, fmt.Errorf("ethernet frame of %d bytes ends inside its VLAN tag at offset %d: %w", len(frame), off-4, ErrMalformed)
		}
		etype = binary.BigEndian.Uint16(frame[off:])
	}
	if etype != EtherType {
		return nil, fmt.Errorf("EtherType %#04x: %w", etype, ErrNotLLDP)
	}
	n, err := ParseLLDPDU(frame[off+2:])
	if err != nil {
		return nil, fmt.Errorf("frame from %s: %w", net.HardwareAddr(frame[6:12]), err)
	}
	return n, nil
}

// ParseLLDPDU decodes an LLDPDU (the Ethernet payload). It must start
// with the Chassis ID, Port ID and TTL TLVs in that order; it ends at an
// End Of LLDPDU TLV (what follows, such as Ethernet padding, is ignored) or
// at the end of pdu. Unknown and reserved TLVs are skipped; a second
// Chassis ID, Port ID or TTL TLV is an error; of the other TLVs the
// standard allows once, the first counts.
func ParseLLDPDU(pdu []byte) (*anvilv1.LLDPNeighbor, error) {
	n := &anvilv1.LLDPNeighbor{}
	seen := map[int]bool{}
	for off, i := 0, 0; off < len(pdu); i++ {
		if len(pdu)-off < 2 {
			return nil, fmt.Errorf("TLV header at offset %d: 1 byte left, want 2: %w", off, ErrMalformed)
		}
		h := binary.BigEndian.Uint16(pdu[off:])
		typ, length := int(h>>9), int(h&0x1ff)
		body := pdu[off+2:]
		if length > len(body) {
			return nil, fmt.Errorf("%s at offset %d: length %d exceeds the %d bytes left: %w", tlvName(typ), off, length, len(body), ErrMalformed)
		}
		body = body[:length]
		// Clause 9.2.7.7.1: the first three TLVs are Chassis ID, Port ID
		// and TTL, in that order.
		if want := []int{tlvChassisID, tlvPortID, tlvTTL}; i < len(want) && typ != want[i] {
			return nil, fmt.Errorf("%s at offset %d where the mandatory %s belongs: %w", tlvName(typ), off, tlvName(want[i]), ErrMalformed)
		}
		if typ == tlvEnd {
			if length != 0 {
				return nil, fmt.Errorf("%s at offset %d: length %d, want 0: %w", tlvName(typ), off, length, ErrMalformed)
			}
			return n, nil
		}
		if err := decodeTLV(n, typ, body, seen); err != nil {
			return nil, fmt.Errorf("%s at offset %d: %w", tlvName(typ), off, err)
		}
		seen[typ] = true
		off += 2 + length
	}
	if !seen[tlvTTL] {
		return nil, fmt.Errorf("LLDPDU of %d bytes ends before its mandatory Chassis ID, Port ID and TTL TLVs: %w", len(pdu), ErrMalformed)
	}
	return n, nil
}

// decodeTLV fills n from one TLV's information string b.
func decodeTLV(n *anvilv1.LLDPNeighbor, typ int, b []byte, seen map[int]bool) error {
	switch typ {
	case tlvChassisID, tlvPortID:
		if seen[typ] {
			return fmt.Errorf("a second one: %w", ErrMalformed)
		}
		// Clause 8.5.2.1/8.5.3.1: length 2 to 256 (subtype and 1 to 255
		// bytes of ID).
		if len(b) < 2 || len(b) > 256 {
			return fmt.Errorf("length %d, want 2 to 256: %w", len(b), ErrMalformed)
		}
		names := chassisSubtypes[:]
		if typ == tlvPortID {
			names = portSubtypes[:]
		}
		sub, id := int(b[0]), b[1:]
		name := fmt.Sprintf("reserved-%d", sub)
		if sub < len(names) && names[sub] != "" {
			name = names[sub]
		}
		if typ == tlvChassisID {
			n.ChassisIdSubtype, n.ChassisId = name, renderID(name, id)
		} else {
			n.PortIdSubtype, n.PortId = name, renderID(name, id)
		}
	case tlvTTL:
		if seen[typ] {
			return fmt.Errorf("a second one: %w", ErrMalformed)
		}
		if len(b) != 2 {
			return fmt.Errorf("length %d, want 2: %w", len(b), ErrMalformed)
		}
		n.TtlSeconds = uint32(binary.BigEndian.Uint16(b))
	case tlvPortDescription, tlvSystemName, tlvSystemDescription:
		if len(b) > 255 {
			return fmt.Errorf("length %d, want at most 255: %w", len(b), ErrMalformed)
		}
		if seen[typ] {
			return nil
		}
		switch typ {
		case tlvPortDescription:
			n.PortDescription = text(b)
		case tlvSystemName:
			n.SystemName = text(b)
		default:
			n.SystemDescription = text(b)
		}
	case tlvManagementAddress:
		a, err := managementAddress(b)
		if err != nil {
			return err
		}
		if len(n.ManagementAddresses) < MaxManagementAddresses {
			n.ManagementAddresses = append(n.ManagementAddresses, a)
		}
	case tlvOrgSpecific:
		// Clause 8.6: OUI (3), subtype (1), up to 507 bytes.
		if len(b) < 4 {
			return fmt.Errorf("length %d, want at least 4 (OUI and subtype): %w", len(b), ErrMalformed)
		}
		if [3]byte(b[:3]) == ieee8021OUI && b[3] == subtypePortVLANID {
			if len(b) != 6 {
				return fmt.Errorf("IEEE 802.1 Port VLAN ID: length %d, want 6: %w", len(b), ErrMalformed)
			}
			// 0: the port knows no VLAN; 4095 is reserved. Either way
			// the inventory's 0 means "not sent".
			if v := binary.BigEndian.Uint16(b[4:]); v < 4095 && n.Vlan == 0 {
				n.Vlan = uint32(v)
			}
		}
	}
	return nil
}

// managementAddress decodes a Management Address TLV's information string
// (clause 8.5.9): address string length (subtype and address, 2 to 32),
// address subtype (an IANA address family number), address, interface
// numbering subtype, interface number (4 bytes), OID string length (0 to
// 128) and OID.
func managementAddress(b []byte) (string, error) {
	if len(b) < 9 || len(b) > 167 {
		return "", fmt.Errorf("length %d, want 9 to 167: %w", len(b), ErrMalformed)
	}
	alen := int(b[0])
	if alen < 2 || alen > 32 {
		return "", fmt.Errorf("address string length %d, want 2 to 32: %w", alen, ErrMalformed)
	}
	// After the address: numbering subtype (1), number (4), OID length (1).
	if 1+alen+6 > len(b) {
		return "", fmt.Errorf("address string length %d overruns the TLV's %d bytes: %w", alen, len(b), ErrMalformed)
	}
	if oid := int(b[1+alen+5]); oid > 128 || 1+alen+6+oid != len(b) {
		return "", fmt.Errorf("object identifier length %d does not fill the TLV's remaining %d bytes (at most 128): %w", oid, len(b)-(1+alen+6), ErrMalformed)
	}
	return networkAddress(b[1 : 1+alen]), nil
}

// networkAddress renders an address that starts with its IANA address
// family number: IPv4 (1) and IPv6 (2) as usual, an IEEE 802 MAC (6) as
// aa:bb:.., anything else as "family N: hex".
func networkAddress(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	fam, a := b[0], b[1:]
	switch {
	case fam == 1 && len(a) == 4:
		return netip.AddrFrom4([4]byte(a)).String()
	case fam == 2 && len(a) == 16:
		return netip.AddrFrom16([16]byte(a)).String()
	case fam == 6 && len(a) == 6:
		return net.HardwareAddr(a).String()
	}
	return fmt.Sprintf("family %d: %s", fam, hex.EncodeToString(a))
}

// renderID renders a chassis or port ID by its subtype: MAC addresses as
// aa:bb:cc:dd:ee:ff, network addresses as text, the others (names,
// components, local values, circuit IDs) as text when they are printable
// and as hex when they are binary (or nothing but NULs).
func renderID(subtype string, id []byte) string {
	switch subtype {
	case "mac":
		if len(id) == 6 {
			return net.HardwareAddr(id).String()
		}
		return hex.EncodeToString(id)
	case "network-address":
		return networkAddress(id)
	}
	if s := text(id); s != "" && printable(id) {
		return s
	}
	return hex.EncodeToString(id)
}

// printable says whether b is UTF-8 text without control characters
// (trailing NULs, which some switches send, aside).
func printable(b []byte) bool {
	s := strings.TrimRight(string(b), "\x00")
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// text renders a TLV's string: trailing NULs dropped, invalid UTF-8 (the
// standard allows any bytes; protobuf strings must be UTF-8) replaced, and
// control characters other than tab and newline dropped.
func text(b []byte) string {
	s := strings.ToValidUTF8(strings.TrimRight(string(b), "\x00"), "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' && r != '\n' {
			return -1
		}
		return r
	}, s)
}
