package format

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The xz container (The .xz File Format 1.2, §2-3) and LZMA2's chunk
// headers, as far as the dictionary cap needs them. github.com/ulikunitz/xz
// allocates each block's dictionary at the size its header asks for, up to
// 4 GiB, before decoding a byte of it; it has no limit of its own. So the
// stream passes through xzGuard first, which walks every structure of it
// — stream headers, block headers, LZMA2 chunk headers (whose sizes are
// explicit, so no decoding is needed), paddings, checks, indexes, footers
// — and refuses a block whose LZMA2 dictionary exceeds the cap before the
// decoder reads that block's header.

const (
	xzHeaderLen   = 12   // Stream Header and Stream Footer
	lzma2FilterID = 0x21 // §5.3.1
)

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

type xzState int

const (
	xzStream      xzState = iota // a Stream Header
	xzBlock                      // a Block Header or the Index Indicator
	xzChunk                      // an LZMA2 chunk header
	xzBlockEnd                   // Block Padding and Check
	xzIndexCount                 // Number of Records
	xzIndexRecord                // a Record, or the Index's end
	xzFooter                     // the Stream Footer
	xzAfter                      // Stream Padding, another stream, or the end
)

// xzGuard passes an xz stream through unchanged, checking each block's
// dictionary against max before the block's header is read from it.
type xzGuard struct {
	r    *bufio.Reader
	max  int64
	st   xzState
	span int   // bytes of the current structure still to pass through
	off  int64 // of the current structure in the compressed stream
	err  error

	check   int   // Check size of the current stream (§2.1.1.2)
	blockN  int64 // compressed bytes of the current block so far
	records int64 // Index records still to come
	indexN  int64 // bytes of the current Index so far
}

func newXzGuard(r io.Reader, max int64) *xzGuard {
	return &xzGuard{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

func (g *xzGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	for g.span == 0 {
		if err := g.step(); err != nil {
			g.err = err
			return 0, err
		}
	}
	n, err := g.r.Read(p[:min(len(p), g.span)])
	g.span -= n
	g.off += int64(n)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("xz stream cut short at byte %d: %w", g.off, io.ErrUnexpectedEOF)
	}
	if err != nil {
		g.err = err
	}
	return n, err
}

// peek returns the next n bytes without consuming them.
func (g *xzGuard) peek(n int, what string) ([]byte, error) {
	b, err := g.r.Peek(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("xz %s at byte %d: %w", what, g.off+int64(len(b)), err)
	}
	return b, nil
}

func (g *xzGuard) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: xz at byte %d: %s", ErrCorrupt, g.off, fmt.Sprintf(format, args...))
}

// step reads the header of the next structure (without consuming it) and
// sets span to its length. At the end of the last stream it returns
// io.EOF.
func (g *xzGuard) step() error {
	switch g.st {
	case xzStream:
		b, err := g.peek(xzHeaderLen, "stream header")
		if err != nil {
			return err
		}
		if !bytes.Equal(b[:6], xzMagic) {
			return g.corrupt("no stream header magic")
		}
		g.check = xzCheckSize(b[7] & 0x0f)
		g.span, g.st = xzHeaderLen, xzBlock
	case xzBlock:
		b, err := g.peek(1, "block header")
		if err != nil {
			return err
		}
		if b[0] == 0 { // Index Indicator
			g.span, g.indexN, g.st = 1, 1, xzIndexCount
			return nil
		}
		size := (int(b[0]) + 1) * 4
		if b, err = g.peek(size, "block header"); err != nil {
			return err
		}
		dict, err := g.blockDict(b)
		if err != nil {
			return err
		}
		if dict > g.max {
			return fmt.Errorf("%w: xz block at byte %d has an LZMA2 dictionary of %d bytes (%s), over the cap of %d bytes (%s)", ErrWindowTooLarge, g.off, dict, mibs(dict), g.max, mibs(g.max))
		}
		g.span, g.blockN, g.st = size, 0, xzChunk
	case xzChunk:
		b, err := g.peek(1, "LZMA2 chunk")
		if err != nil {
			return err
		}
		switch c := b[0]; {
		case c == 0x00: // end of the LZMA2 data
			g.span, g.st = 1, xzBlockEnd
		case c == 0x01 || c == 0x02: // uncompressed chunk
			if b, err = g.peek(3, "LZMA2 chunk"); err != nil {
				return err
			}
			g.span = 3 + int(binary.BigEndian.Uint16(b[1:])) + 1
		case c >= 0x80: // LZMA chunk; a new properties byte from reset 2 on
			n := 5
			if c>>5&3 >= 2 {
				n = 6
			}
			if b, err = g.peek(n, "LZMA2 chunk"); err != nil {
				return err
			}
			g.span = n + int(binary.BigEndian.Uint16(b[3:])) + 1
		default:
			return g.corrupt("invalid LZMA2 chunk control byte %#02x", c)
		}
		g.blockN += int64(g.span)
	case xzBlockEnd:
		g.span, g.st = int((4-g.blockN%4)%4)+g.check, xzBlock
	case xzIndexCount:
		b, _ := g.r.Peek(9) // fewer at the end: uvarint says so
		n, k, err := uvarint(b)
		if err != nil {
			return g.corrupt("index: %v", err)
		}
		g.records, g.span, g.st = n, k, xzIndexRecord
		g.indexN += int64(k)
	case xzIndexRecord:
		if g.records == 0 {
			g.span, g.st = int((4-g.indexN%4)%4)+4, xzFooter // padding, CRC32
			return nil
		}
		b, _ := g.r.Peek(18) // Unpadded Size, Uncompressed Size
		_, k1, err := uvarint(b)
		if err != nil {
			return g.corrupt("index record: %v", err)
		}
		_, k2, err := uvarint(b[k1:])
		if err != nil {
			return g.corrupt("index record: %v", err)
		}
		g.span = k1 + k2
		g.indexN += int64(g.span)
		g.records--
	case xzFooter:
		g.span, g.st = xzHeaderLen, xzAfter
	case xzAfter:
		b, err := g.r.Peek(1)
		if len(b) == 0 && errors.Is(err, io.EOF) {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("xz at byte %d: %w", g.off, err)
		}
		if b[0] == 0 { // Stream Padding comes in groups of four zero bytes
			g.span = 4
			return nil
		}
		g.st = xzStream
	}
	return nil
}

// blockDict parses a Block Header (§3.1) and returns the dictionary size
// of its filter chain, which the decoder supports only as LZMA2 alone.
func (g *xzGuard) blockDict(b []byte) (int64, error) {
	flags := b[1]
	if flags&0x3c != 0 {
		return 0, g.corrupt("block header's reserved flags %#02x are set", flags)
	}
	if nf := flags&3 + 1; nf != 1 {
		return 0, g.corrupt("block of %d filters (the decoder takes LZMA2 alone)", nf)
	}
	p := b[2 : len(b)-4]                                               // up to the CRC32
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // Compressed, Uncompressed Size
		if present {
			_, k, err := uvarint(p)
			if err != nil {
				return 0, g.corrupt("block header: %v", err)
			}
			p = p[k:]
		}
	}
	if len(p) < 3 || p[0] != lzma2FilterID || p[1] != 1 {
		return 0, g.corrupt("block filter is not LZMA2 (the only one the decoder takes)")
	}
	return lzma2Dict(p[2])
}

// lzma2Dict decodes LZMA2's Dictionary Size property (§5.3.1).
func lzma2Dict(prop byte) (int64, error) {
	bits := int64(prop & 0x3f)
	switch {
	case bits > 40:
		return 0, fmt.Errorf("%w: LZMA2 dictionary size code %d", ErrCorrupt, bits)
	case bits == 40:
		return 1<<32 - 1, nil
	}
	return (2 | bits&1) << (bits/2 + 11), nil
}

// xzCheckSize is the size of a Check of type t (§3.4).
func xzCheckSize(t byte) int {
	switch {
	case t == 0:
		return 0
	case t <= 3:
		return 4
	case t <= 6:
		return 8
	case t <= 9:
		return 16
	case t <= 12:
		return 32
	}
	return 64
}

// uvarint decodes the Multibyte Integer (§1.2) at the start of b: seven
// bits a byte, least significant first, at most nine bytes.
func uvarint(b []byte) (int64, int, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		if i >= len(b) {
			return 0, 0, io.ErrUnexpectedEOF
		}
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, errors.New("multibyte integer not in its shortest form")
			}
			return int64(v), i + 1, nil
		}
	}
	return 0, 0, errors.New("multibyte integer longer than nine bytes")
}
