package apply

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
)

// nf_tables attribute numbers (linux/netfilter/nf_tables.h) the counter
// reader decodes; they are the same on every architecture.
const (
	nftaObjName        = 2 // NFTA_OBJ_NAME
	nftaObjType        = 3 // NFTA_OBJ_TYPE
	nftaObjData        = 4 // NFTA_OBJ_DATA
	nftObjectCounter   = 1 // NFT_OBJECT_COUNTER
	nftaCounterBytes   = 1 // NFTA_COUNTER_BYTES
	nftaCounterPackets = 2 // NFTA_COUNTER_PACKETS
)

// objCounter decodes the attributes of one NEWOBJ message (after its
// 4-byte nfgenmsg) into the object's name and, for a counter object, its
// values. ok is false for an object of another type.
func objCounter(attrs []byte) (name string, c Counter, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return "", c, false, err
	}
	ad.ByteOrder = binary.BigEndian
	var typ uint32
	var data []byte
	for ad.Next() {
		switch ad.Type() {
		case nftaObjName:
			name = ad.String()
		case nftaObjType:
			typ = ad.Uint32()
		case nftaObjData:
			data = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return "", Counter{}, false, fmt.Errorf("decode object: %w", err)
	}
	if typ != nftObjectCounter || name == "" {
		return name, Counter{}, false, nil
	}
	d, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return "", Counter{}, false, fmt.Errorf("decode counter %s: %w", name, err)
	}
	d.ByteOrder = binary.BigEndian
	for d.Next() {
		switch d.Type() {
		case nftaCounterBytes:
			c.Bytes = d.Uint64()
		case nftaCounterPackets:
			c.Packets = d.Uint64()
		}
	}
	if err := d.Err(); err != nil {
		return "", Counter{}, false, fmt.Errorf("decode counter %s: %w", name, err)
	}
	return name, c, true, nil
}
