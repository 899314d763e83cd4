package apply

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/firewall/model"
)

// ErrClosed is returned by an Applier after Close.
var ErrClosed = errors.New("apply: applier closed")

// ErrNotApplied is returned by Counters before a ruleset was applied.
var ErrNotApplied = errors.New("apply: no ruleset applied yet")

// Applier programs rulesets into one network namespace's nftables. It is
// safe for concurrent use; Apply calls are serialised.
type Applier struct {
	opts options
	log  *slog.Logger

	mu        sync.Mutex
	closed    bool
	applied   bool // the kernel holds the ruleset with fingerprint last
	last      [sha256.Size]byte
	table     string            // its table
	use       uint32            // the table's use count (chains + sets) right after it was applied; 0: unknown
	uncertain bool              // the outcome of the last batch is unknown: send the next one regardless
	counterOf map[string]string // the table's counter objects: name to comment
	stats     Stats
}

// New returns an Applier after checking that nf_tables answers (it needs
// CAP_NET_ADMIN in the target namespace).
func New(opts ...Option) (*Applier, error) {
	o := options{}
	for _, f := range opts {
		f(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.hasNS && o.netns <= 0 {
		return nil, fmt.Errorf("apply: network namespace descriptor %d is not valid", o.netns)
	}
	a := &Applier{opts: o, log: o.logger}
	c, err := a.conn()
	if err != nil {
		return nil, fmt.Errorf("apply: nftables connection: %w", err)
	}
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("apply: list nftables tables of family inet: %w", err)
	}
	return a, nil
}

func (a *Applier) conn(extra ...nftables.ConnOption) (*nftables.Conn, error) {
	var o []nftables.ConnOption
	if a.opts.hasNS {
		o = append(o, nftables.WithNetNSFd(a.opts.netns))
	}
	return nftables.New(append(o, extra...)...)
}

// Apply makes rs the kernel's live table of family inet, named rs.Table
// or AltTable(rs.Table), replacing the live table of either name (and the
// previously applied table, if it had another name). When there is no
// live table to replace, one netlink transaction creates it. Otherwise a
// first transaction creates the new table, dormant, under the name the
// live one does not have, and a second deletes the old table and wakes
// the new one: traffic moves from the old ruleset to the new one in that
// second transaction, and no packet meets a new set before the kernel
// published its elements (see swap.go). Table says which name is live.
//
// It reports whether a new table went live: false with a nil error when
// rs equals the last applied ruleset (same content, order included) and
// the table is still there as it was left. When the kernel rejects either
// transaction, the old table is the live one as before, the new one is
// deleted, and the last good ruleset remains the reference for the next
// call. (Should the kernel's acknowledgements be lost, ENOBUFS, the
// outcome is unknown: the next call sends its batch whatever it holds.)
func (a *Applier) Apply(rs model.Ruleset) (changed bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false, ErrClosed
	}
	fp := fingerprint(rs)
	repair := false
	if a.applied && !a.uncertain && fp == a.last {
		why, err := a.drift()
		if err != nil {
			return false, fmt.Errorf("apply table inet %s: check the applied table: %w", rs.Table, err)
		}
		if why == "" {
			a.stats.Unchanged++
			return false, nil
		}
		a.log.Warn("nftables table changed outside the applier; applying it again", "table", rs.Table, "reason", why)
		repair = true
	}

	start := time.Now()
	previous := ""
	if a.applied {
		previous = a.table
	}
	tables, err := a.listTables()
	if err != nil {
		return false, fmt.Errorf("apply table inet %s: list the tables: %w", rs.Table, err)
	}
	sw := planSwap(rs.Table, previous, tables)
	var seeds map[string]Counter
	if a.opts.carry && a.applied {
		if seeds, err = a.readCounters(a.table, a.counterOf); err != nil {
			a.log.Warn("reading counters to carry over; the new table's start at zero", "table", a.table, "err", err)
			seeds = nil
		}
	}
	p, err := translate(rs, sw, seeds)
	if err != nil {
		return false, fmt.Errorf("apply table inet %s: %w", rs.Table, err)
	}
	batch, what, err := p.encode()
	if err != nil {
		return false, fmt.Errorf("apply table inet %s: %w", rs.Table, err)
	}
	nl, err := a.dialBatch(p)
	if err != nil {
		return false, fmt.Errorf("apply table inet %s: %w", rs.Table, err)
	}
	defer nl.Close()
	built := time.Since(start)
	a.stats.Replacements++
	a.stats.Transactions++
	a.stats.LastMessages, a.stats.LastBytes = len(batch), p.bytes
	fail := func(err error) (bool, error) {
		a.stats.Rejected++
		if errors.Is(err, errUncertain) {
			// The batch may have committed: send the next one whatever
			// it holds.
			a.uncertain = true
		}
		return false, fmt.Errorf("apply table inet %s (%d sets, %d chains, %d rules; %d netlink messages, %d bytes): %w",
			sw.target, len(p.sets), len(p.chains), len(p.rules), len(batch), p.bytes, err)
	}
	if err := send(nl, batch, what); err != nil {
		return fail(err)
	}
	if sw.dormant {
		// The new table and its sets are committed, dormant; now swap.
		wake, wakeWhat, err := sw.wakeOps()
		if err == nil {
			a.stats.Transactions++
			err = send(nl, wake, wakeWhat)
		}
		if err != nil {
			if !errors.Is(err, errUncertain) {
				a.removeDormant(sw.target)
			}
			return fail(fmt.Errorf("swap to the new table: %w", err))
		}
	}
	if repair {
		a.stats.Repaired++
	}
	a.applied, a.last, a.table, a.uncertain = true, fp, sw.target, false
	a.counterOf = p.counterOf
	a.use = 0
	if t, err := a.listTable(sw.target); err == nil {
		a.use = tableUse(t)
	} else {
		a.log.Warn("reading back the applied table", "table", sw.target, "err", err)
	}
	a.log.Debug("nftables table applied", "table", sw.target, "replaced", len(sw.drop), "two transactions", sw.dormant,
		"sets", len(p.sets), "chains", len(p.chains), "rules", len(p.rules), "messages", len(batch), "bytes", p.bytes,
		"build", built, "took", time.Since(start))
	return true, nil
}

// removeDormant deletes the dormant table a failed swap left behind
// (the next apply would, too).
func (a *Applier) removeDormant(name string) {
	var o tableOps
	o.remove(liveTable{name: name, dormant: true})
	err := o.err
	if err == nil {
		var nl *netlink.Conn
		if nl, err = a.dialBatch(&plan{}); err == nil {
			err = send(nl, frame(o.msgs), o.what)
			nl.Close()
		}
	}
	if err != nil {
		a.log.Warn("deleting the dormant table of a failed swap", "table", name, "err", err)
	}
}

// Table is the name of the table the last successful Apply left live:
// the ruleset's name or AltTable of it ("" before the first).
func (a *Applier) Table() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.applied {
		return ""
	}
	return a.table
}

// drift reports why the applied table no longer looks as it was left
// ("" when it does): gone, or holding another number of chains and sets.
func (a *Applier) drift() (string, error) {
	t, err := a.listTable(a.table)
	if errors.Is(err, syscall.ENOENT) {
		return "table missing", nil
	}
	if err != nil {
		return "", err
	}
	if tableFlags(t)&unix.NFT_TABLE_F_DORMANT != 0 {
		return "table dormant", nil
	}
	if use := tableUse(t); a.use != 0 && use != a.use {
		return fmt.Sprintf("table holds %d chains and sets, %d were applied", use, a.use), nil
	}
	return "", nil
}

// tableUse is the table's use count (its chains, sets and other objects).
func tableUse(t *nftables.Table) uint32 { return netOrder(t.Use) }

// tableFlags are the table's flags (NFT_TABLE_F_DORMANT, ...).
func tableFlags(t *nftables.Table) uint32 { return netOrder(t.Flags) }

// netOrder undoes google/nftables v0.3.0's decoding of a table's
// NFTA_TABLE_USE and NFTA_TABLE_FLAGS in host byte order; the kernel
// sends them in network byte order.
func netOrder(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

func (a *Applier) listTable(name string) (*nftables.Table, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	return c.ListTableOfFamily(name, nftables.TableFamilyINet)
}

// dialBatch opens the netlink socket for one batch, its buffers sized for
// it: the whole batch goes out in one sendmsg, which the kernel refuses
// beyond the send buffer, and each refused message comes back with a copy
// of it, which the kernel drops — reporting ENOBUFS — beyond the receive
// buffer. As root, SO_SNDBUFFORCE and SO_RCVBUFFORCE lift the system
// limits, as nft does for large batches.
func (a *Applier) dialBatch(p *plan) (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if a.opts.hasNS {
		cfg.NetNS = a.opts.netns
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	snd := p.bytes + p.bytes/4 + 1<<20
	rcv := p.bytes + p.messages*errTruesize + 1<<20
	if err := c.SetWriteBuffer(snd); err != nil {
		c.Close()
		return nil, fmt.Errorf("set the netlink send buffer to %d bytes: %w", snd, err)
	}
	if err := c.SetReadBuffer(rcv); err != nil {
		c.Close()
		return nil, fmt.Errorf("set the netlink receive buffer to %d bytes: %w", rcv, err)
	}
	return c, nil
}

// errTruesize is what one error message costs in the receive buffer
// beyond the copy of the refused message (the kernel accounts the socket
// buffer, not the message).
const errTruesize = 1024

// PacketCounts is Counters reduced to packets per comment (the shape
// firewall/app and firewall/metrics read).
func (a *Applier) PacketCounts() (map[string]uint64, error) {
	cs, err := a.Counters()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(cs))
	for k, v := range cs {
		out[k] = v.Packets
	}
	return out, nil
}

// Stats returns what the Applier has done so far.
func (a *Applier) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Close releases the Applier; the applied table stays in the kernel. It
// does not close the namespace descriptor given to WithNetNS.
func (a *Applier) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	return nil
}
