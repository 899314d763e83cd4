package sqlstore

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Inventories are stored zstd-compressed: a large server's 20 KB of
// hardware (24 disks, 8 NICs, 120 PCI devices) is mostly repeated names
// and comes to about 2 KB, which fits in its row instead of six overflow
// pages, and a registration writes that much less to the WAL.
//
// A stored value is the proto bytes as they were (rows written before
// compression, migration 0007 copies them as they are) or zstdMark
// followed by a zstd frame of them. Proto bytes never start with 0x00 (a
// tag of field number 0 is invalid), so the two cannot be confused.
const zstdMark = 0x00

// maxInventory bounds what one stored inventory may decompress to (the
// gRPC layer refuses requests over 4 MiB).
const maxInventory = 16 << 20

// invCodec compresses and decompresses stored inventories. Its encoder and
// decoder are safe for concurrent use (EncodeAll, DecodeAll) and are never
// closed: used whole-buffer only, they hold no goroutines, and a handler
// still decoding while the store closes must not meet a closed decoder.
type invCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newInvCodec() (*invCodec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("inventory compressor: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(4), zstd.WithDecoderMaxMemory(maxInventory), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("inventory decompressor: %w", err)
	}
	return &invCodec{enc: enc, dec: dec}, nil
}

// encode is inv's stored value: nil for nil (NULL), empty for an empty
// inventory, else zstdMark and the compressed proto bytes.
func (c *invCodec) encode(inv *anvilv1.Inventory) ([]byte, error) {
	b, err := encMsg(inv)
	if err != nil || len(b) == 0 {
		return b, err
	}
	return c.enc.EncodeAll(b, []byte{zstdMark}), nil
}

// decode reads a stored value back (nil when the column was NULL).
func (c *invCodec) decode(b []byte, present bool) (*anvilv1.Inventory, error) {
	if !present {
		return nil, nil
	}
	if len(b) > 0 && b[0] == zstdMark {
		raw, err := c.dec.DecodeAll(b[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		if len(raw) == 0 { // encode never compresses an empty inventory: a cut or damaged value
			return nil, errors.New("decompress: no inventory in the compressed value")
		}
		b = raw
	}
	inv := &anvilv1.Inventory{}
	if err := proto.Unmarshal(b, inv); err != nil {
		return nil, err
	}
	return inv, nil
}
