// Package tftp is a read-only TFTP server (RFC 1350) with option
// negotiation (RFC 2347) for blksize (RFC 2348), timeout and tsize
// (RFC 2349), as PXE ROMs use it to fetch iPXE (undionly.kpxe, ipxe.efi).
// It serves only the files it is given by name; writes are refused.
//
// packet.go is the pure packet codec; server.go the UDP transfers.
package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Opcodes (RFC 1350 §5, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350 appendix, RFC 2347 code 8).
const (
	errUndefined    = 0
	errNotFound     = 1
	errAccess       = 2
	errIllegal      = 4
	errUnknownTID   = 5
	errOptionDenied = 8
)

// ErrMalformed is a packet that does not parse.
var ErrMalformed = errors.New("malformed TFTP packet")

// request is a read or write request.
type request struct {
	write    bool
	filename string
	mode     string
	// options in the order they came, keys lower-cased (RFC 2347: case
	// insensitive).
	options [][2]string
}

// parseRequest parses an RRQ or WRQ: opcode, then NUL-terminated
// filename, mode and option/value pairs.
func parseRequest(b []byte) (request, error) {
	if len(b) < 2 {
		return request{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	op := binary.BigEndian.Uint16(b)
	if op != opRRQ && op != opWRQ {
		return request{}, fmt.Errorf("%w: opcode %d is not a request", ErrMalformed, op)
	}
	if len(b) < 4 || b[len(b)-1] != 0 {
		return request{}, fmt.Errorf("%w: request not NUL-terminated", ErrMalformed)
	}
	fields := strings.Split(string(b[2:len(b)-1]), "\x00")
	if len(fields) < 2 || fields[0] == "" || len(fields)%2 != 0 {
		return request{}, fmt.Errorf("%w: want filename, mode and option pairs, got %d fields", ErrMalformed, len(fields))
	}
	r := request{write: op == opWRQ, filename: fields[0], mode: strings.ToLower(fields[1])}
	for i := 2; i+1 < len(fields); i += 2 {
		r.options = append(r.options, [2]string{strings.ToLower(fields[i]), fields[i+1]})
	}
	return r, nil
}

// encodeRequest builds an RRQ (tests and tools).
func encodeRequest(filename, mode string, opts ...[2]string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opRRQ)
	b = append(append(b, filename...), 0)
	b = append(append(b, mode...), 0)
	for _, o := range opts {
		b = append(append(b, o[0]...), 0)
		b = append(append(b, o[1]...), 0)
	}
	return b
}

func encodeData(block uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint16(b, opDATA)
	binary.BigEndian.PutUint16(b[2:], block)
	return append(b, data...)
}

func encodeACK(block uint16) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, opACK)
	binary.BigEndian.PutUint16(b[2:], block)
	return b
}

func encodeError(code uint16, msg string) []byte {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	return append(append(b, msg...), 0)
}

func encodeOACK(opts [][2]string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opOACK)
	for _, o := range opts {
		b = append(append(b, o[0]...), 0)
		b = append(append(b, o[1]...), 0)
	}
	return b
}

// parseACK returns the block an ACK acknowledges; ok is false for any
// other packet. An ERROR packet is returned as err.
func parseACK(b []byte) (block uint16, ok bool, err error) {
	if len(b) < 4 {
		return 0, false, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	switch binary.BigEndian.Uint16(b) {
	case opACK:
		return binary.BigEndian.Uint16(b[2:]), true, nil
	case opERROR:
		msg := b[4:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		return 0, false, fmt.Errorf("client aborted with error %d: %q", binary.BigEndian.Uint16(b[2:]), msg)
	}
	return 0, false, nil
}

// Limits of the negotiated options.
const (
	defaultBlockSize = 512
	minBlockSize     = 8     // RFC 2348
	maxBlockSize     = 65464 // RFC 2348
	// ethernetBlockSize is the largest block that fits an Ethernet frame
	// unfragmented (1500 - IP 20 - UDP 8 - TFTP 4).
	ethernetBlockSize = 1468
)

// negotiated is the outcome of option negotiation.
type negotiated struct {
	blockSize int
	timeout   int // seconds; 0: the server's default
	// oack holds the options acknowledged, in request order; empty: no
	// OACK, the transfer starts with DATA 1.
	oack [][2]string
}

// negotiate applies RFC 2347-2349: unknown options are ignored, blksize is
// capped at what an Ethernet frame carries, tsize is answered with the
// file's size, timeout is accepted within 1-255 s.
// MaxTimeout is the longest retransmission timeout (RFC 2349) a client may
// ask for, in seconds; a longer one is not acknowledged.
const MaxTimeout = 5

func negotiate(opts [][2]string, size int64) (negotiated, error) {
	n := negotiated{blockSize: defaultBlockSize}
	for _, o := range opts {
		switch o[0] {
		case "blksize":
			v, err := strconv.Atoi(o[1])
			if err != nil || v < minBlockSize || v > maxBlockSize {
				return n, fmt.Errorf("blksize %q out of range %d-%d", o[1], minBlockSize, maxBlockSize)
			}
			n.blockSize = min(v, ethernetBlockSize)
			n.oack = append(n.oack, [2]string{"blksize", strconv.Itoa(n.blockSize)})
		case "tsize":
			n.oack = append(n.oack, [2]string{"tsize", strconv.FormatInt(size, 10)})
		case "timeout":
			v, err := strconv.Atoi(o[1])
			if err != nil || v < 1 || v > 255 {
				return n, fmt.Errorf("timeout %q out of range 1-255", o[1])
			}
			if v > MaxTimeout {
				// Not acknowledged (RFC 2347: a server may ignore an option
				// it does not accept): the client keeps the default, and a
				// silent client cannot hold a transfer for minutes.
				continue
			}
			n.timeout = v
			n.oack = append(n.oack, [2]string{"timeout", o[1]})
		}
	}
	return n, nil
}
