package sqlstore

import (
	"errors"
	"fmt"
	"slices"
	"sync"

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

// maxPooled bounds the buffers kept for reuse: a rare huge inventory's
// buffer goes to the collector instead of staying in the pool.
const maxPooled = 256 << 10

// invCodec compresses and decompresses stored inventories. Its encoder and
// decoder are safe for concurrent use (EncodeAll, DecodeAll) and are never
// closed: used whole-buffer only, they hold no goroutines, and a handler
// still decoding while the store closes must not meet a closed decoder.
//
// Every registration stores a 20 KB inventory; the proto bytes and the
// compressed value go in reused buffers (bufs), so a registration leaves
// no garbage of that size behind.
type invCodec struct {
	enc  *zstd.Encoder
	dec  *zstd.Decoder
	bufs sync.Pool // *[]byte
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

// buffer is a reused buffer for encode; give it back with recycle once
// the value written into it is no longer used.
func (c *invCodec) buffer() *[]byte {
	if b, ok := c.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 32<<10)
	return &b
}

func (c *invCodec) recycle(b *[]byte) {
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		c.bufs.Put(b)
	}
}

// encode writes inv's stored value into buf (its contents are replaced)
// and returns it: nil for nil (NULL), empty for an empty inventory, else
// zstdMark and the compressed proto bytes. The value shares buf's memory.
func (c *invCodec) encode(inv *anvilv1.Inventory, buf *[]byte) ([]byte, error) {
	if inv == nil || !inv.ProtoReflect().IsValid() {
		return nil, nil
	}
	scratch := c.buffer()
	defer c.recycle(scratch)
	raw, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend((*scratch)[:0], inv)
	if err != nil {
		return nil, err
	}
	*scratch = raw
	out := (*buf)[:0]
	if len(raw) > 0 {
		// Room for the frame without growing: zstd's bound on a frame of
		// one block is the input plus its headers.
		out = slices.Grow(out, len(raw)+len(raw)>>7+64)
		out = c.enc.EncodeAll(raw, append(out, zstdMark))
	}
	*buf = out
	return out, nil
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
