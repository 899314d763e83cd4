package apply

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
)

// nf_tables attribute numbers (linux/netfilter/nf_tables.h) the counter
// reader decodes; they are the same on every architecture.
const (
	nftaRuleExpressions = 4 // NFTA_RULE_EXPRESSIONS
	nftaRuleUserdata    = 7 // NFTA_RULE_USERDATA
	nftaListElem        = 1 // NFTA_LIST_ELEM
	nftaExprName        = 1 // NFTA_EXPR_NAME
	nftaExprData        = 2 // NFTA_EXPR_DATA
	nftaCounterBytes    = 1 // NFTA_COUNTER_BYTES
	nftaCounterPackets  = 2 // NFTA_COUNTER_PACKETS
)

// ruleCounter decodes the attributes of one NEWRULE message (after its
// 4-byte nfgenmsg) into the rule's comment and the sum of its counter
// expressions. ok is false for a rule without a comment or a counter.
// Only these attributes are read, so that a dump of tens of thousands of
// rules stays cheap.
func ruleCounter(attrs []byte) (name string, c Counter, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return "", c, false, err
	}
	ad.ByteOrder = binary.BigEndian
	var counted, named bool
	for ad.Next() {
		switch ad.Type() {
		case nftaRuleUserdata:
			name, named = comment(ad.Bytes())
		case nftaRuleExpressions:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					if list.Type() != nftaListElem {
						continue
					}
					list.Nested(func(e *netlink.AttributeDecoder) error {
						var kind string
						var data []byte
						for e.Next() {
							switch e.Type() {
							case nftaExprName:
								kind = e.String()
							case nftaExprData:
								data = e.Bytes()
							}
						}
						if kind != "counter" || data == nil {
							return e.Err()
						}
						d, err := netlink.NewAttributeDecoder(data)
						if err != nil {
							return err
						}
						d.ByteOrder = binary.BigEndian
						for d.Next() {
							switch d.Type() {
							case nftaCounterBytes:
								c.Bytes += d.Uint64()
							case nftaCounterPackets:
								c.Packets += d.Uint64()
							}
						}
						counted = true
						return d.Err()
					})
				}
				return list.Err()
			})
		}
	}
	if err := ad.Err(); err != nil {
		return "", Counter{}, false, fmt.Errorf("decode rule: %w", err)
	}
	return name, c, counted && named, nil
}
