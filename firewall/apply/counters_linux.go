package apply

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Counters reads the applied table's counter objects — one per comment of
// the counted rules, shared by all rules with that comment — and returns
// them by comment. A newly applied table starts its counters at zero, or,
// with WithCarryCounters, at the values of the table it replaced.
//
// It is one object dump of the table (a few messages even for tens of
// thousands of rules), read in large messages.
func (a *Applier) Counters() (map[string]Counter, error) {
	a.mu.Lock()
	closed, table, applied, names := a.closed, a.table, a.applied, a.counterOf
	a.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !applied {
		return nil, ErrNotApplied
	}
	return a.readCounters(table, names)
}

// readCounters dumps the counter objects of table and maps them to their
// comments through names (object name to comment, from the apply that
// made them); objects not in names are left out.
func (a *Applier) readCounters(table string, names map[string]string) (map[string]Counter, error) {
	cfg := &netlink.Config{}
	if a.opts.hasNS {
		cfg.NetNS = a.opts.netns
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("counters of table inet %s: netlink: %w", table, err)
	}
	defer c.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_OBJ_TABLE, Data: append([]byte(table), 0)},
		{Type: unix.NFTA_OBJ_TYPE, Data: binary.BigEndian.AppendUint32(nil, nftObjectCounter)},
	})
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETOBJ),
			Flags: netlink.Request | netlink.Dump,
		},
		// nfgenmsg: family, version NFNETLINK_V0, resource id 0
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	// A dump that overlaps a commit is flagged as interrupted: read again.
	for attempt := 0; ; attempt++ {
		out, interrupted, err := dumpCounters(c, req, names)
		if err != nil {
			return nil, fmt.Errorf("counters of table inet %s: dump counter objects: %w", table, err)
		}
		if !interrupted {
			return out, nil
		}
		if attempt == 2 {
			return nil, fmt.Errorf("counters of table inet %s: the object dump was interrupted by ruleset changes three times", table)
		}
	}
}

// dumpBuf is the receive buffer for dumps. The kernel sizes each dump
// message to the reader's last buffer (up to 32 KiB) and, for every
// message, walks the objects from the first one to where the last message
// stopped, so bigger messages make a large dump cheaper than
// netlink.Conn.Receive's page-sized first read.
const dumpBuf = 64 << 10

func dumpCounters(c *netlink.Conn, req netlink.Message, names map[string]string) (map[string]Counter, bool, error) {
	sent, err := c.Send(req)
	if err != nil {
		return nil, false, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, false, err
	}
	out := map[string]Counter{}
	interrupted := false
	buf := make([]byte, dumpBuf)
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return nil, false, err
		}
		if rerr != nil {
			return nil, false, fmt.Errorf("recvfrom: %w", rerr)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, false, err
		}
		for _, m := range msgs {
			if m.Header.Seq != sent.Header.Sequence {
				continue
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			if m.Header.Type == unix.NLMSG_DONE || m.Header.Type == unix.NLMSG_ERROR {
				// Both carry the (negative) errno first; DONE ends the dump.
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return nil, false, syscall.Errno(-errno)
					}
				}
				if m.Header.Type == unix.NLMSG_DONE {
					return out, interrupted, nil
				}
				continue
			}
			if len(m.Data) < 4 {
				continue
			}
			name, ctr, ok, err := objCounter(m.Data[4:])
			if err != nil {
				return nil, false, err
			}
			if comment, known := names[name]; ok && known {
				out[comment] = ctr
			}
		}
	}
}
