package lldp

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/proto"
)

// ethHeader is an untagged Ethernet header to the nearest-bridge group
// address from 02:00:00:00:00:01, EtherType 0x88cc.
var ethHeader = []byte{
	0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, // destination: nearest bridge
	0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
	0x88, 0xcc, // EtherType LLDP
}

// fullPDU is an LLDPDU with every TLV the parser reads, built from IEEE
// 802.1AB-2016 clause 8 (TLV header: 7-bit type, 9-bit length).
var fullPDU = []byte{
	// Chassis ID TLV: type 1, length 7 → 0x02 0x07; subtype 4 (MAC address).
	0x02, 0x07, 0x04, 0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e,
	// Port ID TLV: type 2, length 11 → 0x04 0x0b; subtype 5 (interface name) "Ethernet12".
	0x04, 0x0b, 0x05, 'E', 't', 'h', 'e', 'r', 'n', 'e', 't', '1', '2',
	// Time To Live TLV: type 3, length 2 → 0x06 0x02; 120 s.
	0x06, 0x02, 0x00, 0x78,
	// Port Description TLV: type 4, length 11 → 0x08 0x0b; "to server 7".
	0x08, 0x0b, 't', 'o', ' ', 's', 'e', 'r', 'v', 'e', 'r', ' ', '7',
	// System Name TLV: type 5, length 8 → 0x0a 0x08; "leaf-r12".
	0x0a, 0x08, 'l', 'e', 'a', 'f', '-', 'r', '1', '2',
	// System Description TLV: type 6, length 9 → 0x0c 0x09; "EOS 4.30F".
	0x0c, 0x09, 'E', 'O', 'S', ' ', '4', '.', '3', '0', 'F',
	// System Capabilities TLV: type 7, length 4 → 0x0e 0x04; bridge+router, bridge enabled.
	0x0e, 0x04, 0x00, 0x14, 0x00, 0x04,
	// Management Address TLV: type 8, length 12 → 0x10 0x0c; address
	// string length 5, subtype 1 (IPv4) 192.0.2.10, interface numbering
	// subtype 2 (ifIndex), interface number 7, OID length 0.
	0x10, 0x0c, 0x05, 0x01, 192, 0, 2, 10, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00,
	// Management Address TLV: type 8, length 24 → 0x10 0x18; address
	// string length 17, subtype 2 (IPv6) 2001:db8::a, ifIndex 7, OID
	// length 0.
	0x10, 0x18, 0x11, 0x02,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
	0x02, 0x00, 0x00, 0x00, 0x07, 0x00,
	// Management Address TLV: type 8, length 15 → 0x10 0x0f; address
	// string length 7, subtype 6 (IEEE 802 MAC), ifIndex 7, OID length 1
	// (one byte of OID).
	0x10, 0x0f, 0x07, 0x06, 0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e, 0x02, 0x00, 0x00, 0x00, 0x07, 0x01, 0x2b,
	// Organizationally Specific TLV: type 127, length 6 → 0xfe 0x06; OUI
	// 00-80-C2 (IEEE 802.1), subtype 1 (Port VLAN ID), PVID 100.
	0xfe, 0x06, 0x00, 0x80, 0xc2, 0x01, 0x00, 0x64,
	// Organizationally Specific TLV: type 127, length 9 → 0xfe 0x09; OUI
	// 00-12-0F (IEEE 802.3), subtype 1 (MAC/PHY), skipped.
	0xfe, 0x09, 0x00, 0x12, 0x0f, 0x01, 0x03, 0x6c, 0x00, 0x00, 0x10,
	// A reserved TLV: type 42, length 1 → 0x54 0x01; skipped.
	0x54, 0x01, 0xff,
	// End Of LLDPDU TLV: type 0, length 0.
	0x00, 0x00,
}

var fullWant = &anvilv1.LLDPNeighbor{
	ChassisId: "00:1b:21:3c:4d:5e", ChassisIdSubtype: "mac",
	PortId: "Ethernet12", PortIdSubtype: "interface-name",
	PortDescription: "to server 7", SystemName: "leaf-r12", SystemDescription: "EOS 4.30F",
	Vlan: 100, ManagementAddresses: []string{"192.0.2.10", "2001:db8::a", "00:1b:21:3c:4d:5e"}, TtlSeconds: 120,
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// minimal is Chassis ID (subtype 7, local "sw1"), Port ID (subtype 7,
// local "p1"), TTL 30, without an End TLV (optional since 802.1AB-2009).
var minimal = []byte{
	0x02, 0x04, 0x07, 's', 'w', '1', // Chassis ID, length 4, local
	0x04, 0x03, 0x07, 'p', '1', // Port ID, length 3, local
	0x06, 0x02, 0x00, 0x1e, // TTL 30
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  *anvilv1.LLDPNeighbor
	}{
		{"every TLV", concat(ethHeader, fullPDU), fullWant},
		{"every TLV, padded after End", concat(ethHeader, fullPDU, make([]byte, 20)), fullWant},
		{"802.1Q tag", concat(ethHeader[:12], []byte{0x81, 0x00, 0x00, 0x64, 0x88, 0xcc}, fullPDU), fullWant},
		{"802.1ad and 802.1Q tags", concat(ethHeader[:12], []byte{0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x88, 0xcc}, fullPDU), fullWant},
		{"mandatory only, no End", concat(ethHeader, minimal),
			&anvilv1.LLDPNeighbor{ChassisId: "sw1", ChassisIdSubtype: "local", PortId: "p1", PortIdSubtype: "local", TtlSeconds: 30}},
		{"network-address chassis, agent circuit ID port in hex, TTL 0", concat(ethHeader, []byte{
			0x02, 0x06, 0x05, 0x01, 10, 0, 0, 1, // Chassis ID, length 6, network address IPv4 10.0.0.1
			0x04, 0x04, 0x06, 0x01, 0x02, 0x00, // Port ID, length 4, agent circuit ID 01 02 00 (binary)
			0x06, 0x02, 0x00, 0x00, // TTL 0 (shutdown)
			0x00, 0x00}),
			&anvilv1.LLDPNeighbor{ChassisId: "10.0.0.1", ChassisIdSubtype: "network-address", PortId: "010200", PortIdSubtype: "agent-circuit-id"}},
		{"names with NUL terminators and invalid UTF-8", concat(ethHeader, []byte{
			0x02, 0x05, 0x06, 'e', 't', '0', 0x00, // Chassis ID, interface name "et0\0"
			0x04, 0x04, 0x01, 'u', 'p', 0x00, // Port ID, interface alias "up\0"
			0x06, 0x02, 0x00, 0x78, // TTL 120
			0x0a, 0x04, 's', 0xff, 'w', 0x07, // System Name: invalid byte and a BEL
			0x00, 0x00}),
			&anvilv1.LLDPNeighbor{ChassisId: "et0", ChassisIdSubtype: "interface-name", PortId: "up", PortIdSubtype: "interface-alias", SystemName: "s\uFFFDw", TtlSeconds: 120}},
		{"reserved subtype, Port VLAN ID 0 and an unknown 802.1 subtype", concat(ethHeader, []byte{
			0x02, 0x03, 0x09, 'x', 'y', // Chassis ID, subtype 9 (reserved)
			0x04, 0x03, 0x07, 'p', '1', // Port ID, local
			0x06, 0x02, 0x00, 0x1e, // TTL 30
			0xfe, 0x06, 0x00, 0x80, 0xc2, 0x01, 0x00, 0x00, // Port VLAN ID 0: not known
			0xfe, 0x07, 0x00, 0x80, 0xc2, 0x02, 0x00, 0x00, 0x05, // 802.1 subtype 2 (protocol VLAN), skipped
			0x00, 0x00}),
			&anvilv1.LLDPNeighbor{ChassisId: "xy", ChassisIdSubtype: "reserved-9", PortId: "p1", PortIdSubtype: "local", TtlSeconds: 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestParseLLDPD: a frame Debian's lldpd 1.0.16 sent (testdata/README.md).
func TestParseLLDPD(t *testing.T) {
	frame, err := os.ReadFile("testdata/lldpd-1.0.16.frame")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(frame)
	if err != nil {
		t.Fatal(err)
	}
	want := &anvilv1.LLDPNeighbor{
		ChassisId: "fe:89:7b:e1:7c:5e", ChassisIdSubtype: "mac", PortId: "va", PortIdSubtype: "interface-name",
		PortDescription: "va", SystemName: "anvil-test-switch", SystemDescription: "anvil test switch",
		ManagementAddresses: []string{"192.0.2.7"}, TtlSeconds: 4,
	}
	if !proto.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	mandatory := minimal
	for _, tc := range []struct {
		name, frame string
		want        error
		msg         string
	}{
		{"short Ethernet header", string(ethHeader[:13]), ErrMalformed, "shorter than its 14-byte header"},
		{"IPv4 frame", string(concat(ethHeader[:12], []byte{0x08, 0x00}, mandatory)), ErrNotLLDP, "EtherType 0x0800"},
		{"cut VLAN tag", string(concat(ethHeader[:12], []byte{0x81, 0x00, 0x00})), ErrMalformed, "inside its VLAN tag"},
		{"three VLAN tags", string(concat(ethHeader[:12], []byte{0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x88, 0xcc}, mandatory)), ErrNotLLDP, "more than two VLAN tags"},
		{"empty LLDPDU", string(ethHeader), ErrMalformed, "ends before its mandatory"},
		{"half a TLV header", string(concat(ethHeader, []byte{0x02})), ErrMalformed, "1 byte left"},
		{"TLV longer than the frame", string(concat(ethHeader, []byte{0x02, 0x07, 0x04, 0x00})), ErrMalformed, "Chassis ID TLV (type 1) at offset 0: length 7 exceeds the 2 bytes left"},
		{"Port ID first", string(concat(ethHeader, mandatory[6:])), ErrMalformed, "Port ID TLV (type 2) at offset 0 where the mandatory Chassis ID TLV (type 1) belongs"},
		{"End before TTL", string(concat(ethHeader, mandatory[:11], []byte{0, 0})), ErrMalformed, "End Of LLDPDU TLV (type 0) at offset 11 where the mandatory Time To Live"},
		{"no TTL", string(concat(ethHeader, mandatory[:11])), ErrMalformed, "ends before its mandatory"},
		{"chassis ID without ID", string(concat(ethHeader, []byte{0x02, 0x01, 0x04}, mandatory[6:])), ErrMalformed, "Chassis ID TLV (type 1) at offset 0: length 1, want 2 to 256"},
		{"TTL of 3 bytes", string(concat(ethHeader, mandatory[:11], []byte{0x06, 0x03, 0, 0, 1})), ErrMalformed, "Time To Live TLV (type 3) at offset 11: length 3, want 2"},
		{"End with a length", string(concat(ethHeader, mandatory, []byte{0x00, 0x01, 0x00})), ErrMalformed, "End Of LLDPDU TLV (type 0) at offset 15: length 1, want 0"},
		{"second chassis ID", string(concat(ethHeader, mandatory, mandatory[:6])), ErrMalformed, "Chassis ID TLV (type 1) at offset 15: a second one"},
		{"second TTL", string(concat(ethHeader, mandatory, mandatory[11:])), ErrMalformed, "Time To Live TLV (type 3) at offset 15: a second one"},
		{"system name of 256 bytes", string(concat(ethHeader, mandatory, []byte{0x0b, 0x00}, make([]byte, 256))), ErrMalformed, "System Name TLV (type 5) at offset 15: length 256, want at most 255"},
		{"management address TLV too short", string(concat(ethHeader, mandatory, []byte{0x10, 0x02, 0x01, 0x01})), ErrMalformed, "length 2, want 9 to 167"},
		{"management address string of 1", string(concat(ethHeader, mandatory, []byte{0x10, 0x09, 0x01, 0x01, 2, 0, 0, 0, 1, 0, 0})), ErrMalformed, "address string length 1, want 2 to 32"},
		{"management address overrun", string(concat(ethHeader, mandatory, []byte{0x10, 0x09, 0x05, 0x01, 10, 0, 0, 1, 2, 0, 0})), ErrMalformed, "address string length 5 overruns the TLV's 9 bytes"},
		{"management OID length wrong", string(concat(ethHeader, mandatory, []byte{0x10, 0x0c, 0x05, 0x01, 10, 0, 0, 1, 2, 0, 0, 0, 1, 0x03})), ErrMalformed, "object identifier length 3"},
		{"organizational TLV without subtype", string(concat(ethHeader, mandatory, []byte{0xfe, 0x03, 0x00, 0x80, 0xc2})), ErrMalformed, "Organizationally Specific TLV (type 127) at offset 15: length 3, want at least 4"},
		{"Port VLAN ID of 3 bytes", string(concat(ethHeader, mandatory, []byte{0xfe, 0x07, 0x00, 0x80, 0xc2, 0x01, 0, 0, 5})), ErrMalformed, "Port VLAN ID: length 7, want 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Parse([]byte(tc.frame))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Parse = %v, %v; want an error wrapping %v saying %q", n, err, tc.want, tc.msg)
			}
		})
	}
}

// FuzzParse: any bytes give a neighbour or an error, never a panic; a
// neighbour has UTF-8 strings only (protobuf refuses others) and marshals.
func FuzzParse(f *testing.F) {
	real, err := os.ReadFile("testdata/lldpd-1.0.16.frame")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		real,
		concat(ethHeader, fullPDU),
		concat(ethHeader, minimal),
		concat(ethHeader[:12], []byte{0x81, 0x00, 0x00, 0x64, 0x88, 0xcc}, fullPDU),
		concat(ethHeader, minimal, []byte{0x10, 0x0c, 0x05, 0x01, 10, 0, 0, 1, 2, 0, 0, 0, 1, 0x00}),
		concat(ethHeader, minimal, []byte{0xfe, 0x06, 0x00, 0x80, 0xc2, 0x01, 0x0f, 0xff}),
		ethHeader,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		n, err := Parse(frame)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotLLDP) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrNotLLDP", err)
			}
			return
		}
		for _, s := range append([]string{n.ChassisId, n.ChassisIdSubtype, n.PortId, n.PortIdSubtype, n.PortDescription, n.SystemName, n.SystemDescription}, n.ManagementAddresses...) {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 %q", s)
			}
		}
		if n.ChassisId == "" || n.PortId == "" || n.Vlan > 4094 {
			t.Fatalf("neighbour without IDs or with VLAN %d: %v", n.Vlan, n)
		}
		if _, err := proto.Marshal(n); err != nil {
			t.Fatalf("marshal %v: %v", n, err)
		}
	})
}
