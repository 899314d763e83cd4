package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// SCTP packets (RFC 9260) for probing an association start without a
// kernel SCTP stack: the client sends an INIT, the server answers with an
// INIT ACK carrying the INIT's initiate tag — the exchange conntrack's
// SCTP tracker (nf_conntrack_proto_sctp) follows as a new association.

// SCTP chunk types used here.
const (
	sctpInit    = 1
	sctpInitAck = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket is the common header and the first chunk of a packet.
type sctpPacket struct {
	SrcPort, DstPort uint16
	VTag             uint32
	Chunk            uint8
	// InitiateTag of an INIT or INIT ACK chunk.
	InitiateTag uint32
}

// sctpChecksum is the CRC32c of the packet with its checksum field zero,
// as stored in the header (little-endian, RFC 9260 appendix A).
func sctpChecksum(pkt []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, pkt[:8])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, pkt[12:])
}

// marshalSCTPInit builds an INIT (ack false) or INIT ACK (ack true) packet.
// An INIT ACK carries a State Cookie parameter, as it must.
func marshalSCTPInit(p sctpPacket, ack bool) []byte {
	chunkLen := 20
	if ack {
		chunkLen += 12 // State Cookie parameter: type, length, 8 bytes
	}
	b := make([]byte, 12+chunkLen)
	binary.BigEndian.PutUint16(b[0:], p.SrcPort)
	binary.BigEndian.PutUint16(b[2:], p.DstPort)
	binary.BigEndian.PutUint32(b[4:], p.VTag)
	c := b[12:]
	c[0] = sctpInit
	if ack {
		c[0] = sctpInitAck
	}
	binary.BigEndian.PutUint16(c[2:], uint16(chunkLen))
	binary.BigEndian.PutUint32(c[4:], p.InitiateTag)
	binary.BigEndian.PutUint32(c[8:], 65535) // a_rwnd
	binary.BigEndian.PutUint16(c[12:], 1)    // outbound streams
	binary.BigEndian.PutUint16(c[14:], 1)    // inbound streams
	binary.BigEndian.PutUint32(c[16:], p.InitiateTag)
	if ack {
		binary.BigEndian.PutUint16(c[20:], 7) // State Cookie
		binary.BigEndian.PutUint16(c[22:], 12)
		binary.BigEndian.PutUint64(c[24:], uint64(p.InitiateTag)<<32|uint64(p.VTag))
	}
	binary.LittleEndian.PutUint32(b[8:], sctpChecksum(b))
	return b
}

// parseSCTP reads the common header and the first chunk of an SCTP
// packet and checks its checksum.
func parseSCTP(b []byte) (sctpPacket, error) {
	if len(b) < 16 {
		return sctpPacket{}, fmt.Errorf("sctp packet of %d bytes: too short", len(b))
	}
	if got, want := binary.LittleEndian.Uint32(b[8:]), sctpChecksum(b); got != want {
		return sctpPacket{}, fmt.Errorf("sctp checksum %#08x, want %#08x", got, want)
	}
	p := sctpPacket{
		SrcPort: binary.BigEndian.Uint16(b[0:]),
		DstPort: binary.BigEndian.Uint16(b[2:]),
		VTag:    binary.BigEndian.Uint32(b[4:]),
		Chunk:   b[12],
	}
	if p.Chunk == sctpInit || p.Chunk == sctpInitAck {
		if len(b) < 12+20 {
			return sctpPacket{}, errors.New("sctp INIT chunk: too short")
		}
		p.InitiateTag = binary.BigEndian.Uint32(b[16:])
	}
	return p, nil
}

// ipv4Payload strips the IPv4 header a raw IPv4 socket delivers.
func ipv4Payload(b []byte) ([]byte, error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil, errors.New("not an IPv4 packet")
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return nil, fmt.Errorf("IPv4 header length %d: bad", ihl)
	}
	return b[ihl:], nil
}
