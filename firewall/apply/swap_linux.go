package apply

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The swap's table messages are built here: google/nftables v0.3.0
// always sends a table's flags as 0, and a dormant table needs
// NFT_TABLE_F_DORMANT.

// tableMsg is a NEWTABLE (create or update) or DELTABLE message for the
// table name of family inet.
func tableMsg(op int, name string, dormant bool) (netlink.Message, error) {
	var flags uint32
	if dormant {
		flags = unix.NFT_TABLE_F_DORMANT
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(name), 0)},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binaryutil.BigEndian.PutUint32(flags)},
	})
	if err != nil {
		return netlink.Message{}, fmt.Errorf("table %s: %w", name, err)
	}
	h := netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | op)}
	if op == unix.NFT_MSG_NEWTABLE {
		h.Flags = netlink.Create // an existing table is updated
	}
	return netlink.Message{Header: h, Data: append(nfgenmsg(unix.NFPROTO_INET), attrs...)}, nil
}

// nfgenmsg is the header after the netlink header: family, version,
// resource id (the subsystem for batch begin and end, else 0).
func nfgenmsg(family uint8) []byte {
	return []byte{family, unix.NFNETLINK_V0, 0, 0}
}

// tableOps accumulates table messages and what each does.
type tableOps struct {
	msgs []netlink.Message
	what []string
	err  error
}

func (o *tableOps) add(op int, name string, dormant bool, what string) {
	m, err := tableMsg(op, name, dormant)
	if o.err == nil {
		o.err = err
	}
	o.msgs = append(o.msgs, m)
	o.what = append(o.what, what)
}

// remove deletes t whether or not it still exists: an update that
// keeps its state (or creates it in that state), then the delete.
func (o *tableOps) remove(t liveTable) {
	w := "delete table inet " + t.name
	o.add(unix.NFT_MSG_NEWTABLE, t.name, t.dormant, w)
	o.add(unix.NFT_MSG_DELTABLE, t.name, t.dormant, w)
}

// firstOps are the table messages that open the first transaction:
// the target defined afresh (dormant when a second transaction will wake
// it) and, for a single transaction, the tables it replaces deleted.
func (s swapPlan) firstOps() ([]netlink.Message, []string, error) {
	var o tableOps
	if !s.dormant {
		for _, t := range s.drop {
			o.remove(t)
		}
	}
	was := liveTable{name: s.target, dormant: s.dormant}
	if s.targetWas != nil {
		was = *s.targetWas
	}
	o.remove(was)
	o.add(unix.NFT_MSG_NEWTABLE, s.target, s.dormant, "table inet "+s.target)
	return o.msgs, o.what, o.err
}

// wakeOps are the second transaction: the replaced tables deleted and
// the target woken. It is framed as a batch (see frame).
func (s swapPlan) wakeOps() ([]netlink.Message, []string, error) {
	var o tableOps
	for _, t := range s.drop {
		o.remove(t)
	}
	o.add(unix.NFT_MSG_NEWTABLE, s.target, false, "wake table inet "+s.target)
	return frame(o.msgs), o.what, o.err
}

// frame wraps messages in BATCH_BEGIN and BATCH_END, asking for one
// acknowledgement, on the last message.
func frame(msgs []netlink.Message) []netlink.Message {
	edge := func(t uint16) netlink.Message {
		d := nfgenmsg(unix.AF_UNSPEC)
		d[2], d[3] = 0, unix.NFNL_SUBSYS_NFTABLES // resource id, big endian
		return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(t)}, Data: d}
	}
	out := make([]netlink.Message, 0, len(msgs)+2)
	out = append(out, edge(unix.NFNL_MSG_BATCH_BEGIN))
	out = append(out, msgs...)
	out = append(out, edge(unix.NFNL_MSG_BATCH_END))
	if len(msgs) > 0 {
		out[len(out)-2].Header.Flags |= netlink.Acknowledge
	}
	return out
}

// listTables returns the tables of family inet and whether each is
// dormant.
func (a *Applier) listTables() ([]liveTable, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	out := make([]liveTable, len(ts))
	for i, t := range ts {
		out[i] = liveTable{name: t.Name, dormant: tableFlags(t)&unix.NFT_TABLE_F_DORMANT != 0}
	}
	return out, nil
}
