// Package apply programs a model.Ruleset into the Linux kernel's nftables
// (nf_tables over netlink, via github.com/google/nftables) as one
// transaction: the table of family inet is created if missing, deleted and
// defined again — every set with all its elements, every chain and rule —
// in a single netlink batch, so the kernel either commits all of it or
// nothing. The translation follows what nft(8) sends for the same ruleset
// text (model.Render), so `nft list table` shows the same table either
// way. google/nftables encodes the batch; the applier sends it asking for
// one acknowledgement instead of one per message (see batch_linux.go), and
// a rejection names the rule or set the kernel refused.
//
// An Applier remembers the fingerprint of the last ruleset the kernel
// accepted and sends nothing when asked to apply the same ruleset again
// (the comparison is order-sensitive: reordered rules are a change), unless
// the table has disappeared or changed shape behind its back. When the
// kernel rejects a batch, the previous table stays in place and the Applier
// keeps treating it as the current one.
//
// Counters reads the per-rule counters back, summed by rule comment (the
// compiler names each counted rule after its policies); WithCarryCounters
// keeps them running across applies.
package apply

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"log/slog"
	"net/netip"

	"github.com/anvil-metal/anvil/firewall/model"
)

// Option configures an Applier.
type Option func(*options)

type options struct {
	netns  int
	hasNS  bool
	logger *slog.Logger
	carry  bool
}

// WithNetNS programs the network namespace the descriptor refers to
// instead of the caller's (nftables.WithNetNSFd). The caller keeps
// ownership of fd and must keep it open while the Applier is used.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netns, o.hasNS = fd, true }
}

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithCarryCounters makes every replacing batch start the new table's
// counters at the old table's sums, by rule comment (the first counted
// rule with a comment gets the sum), so that Counters never goes backwards
// across applies while a comment persists. The old counters are read just
// before the batch is sent; packets counted in between are lost. Without
// it, each applied table starts at zero (and a reader such as
// firewall/metrics must fold the old counters in itself, but only when a
// batch actually committed).
func WithCarryCounters() Option {
	return func(o *options) { o.carry = true }
}

// Counter is the sum of the counters of the rules sharing one comment.
type Counter struct {
	Packets, Bytes uint64
}

// Stats describes what an Applier has done so far.
type Stats struct {
	// Replacements is the number of tables sent to the kernel,
	// rejected ones included.
	Replacements uint64
	// Transactions counts the netlink batches (one transaction, one
	// sendmsg each) of those: one per replacement, or two when a live
	// table was replaced (see Apply).
	Transactions uint64
	// Rejected counts replacements that returned an error.
	Rejected uint64
	// Unchanged counts Apply calls answered without a batch because the
	// ruleset equalled the one in the kernel.
	Unchanged uint64
	// Repaired counts batches sent for an unchanged ruleset because the
	// table had been deleted or altered outside the Applier.
	Repaired uint64
	// LastMessages and LastBytes describe the last batch sent: netlink
	// messages in it and their approximate size.
	LastMessages, LastBytes int
}

// fingerprint identifies a ruleset for change detection: the SHA-256 of
// a canonical binary encoding of everything the kernel is given — table,
// set types, flags and elements, chains, hooks, rules in order, comments —
// and nothing it is not (counter ownership). It costs one pass over the
// ruleset; model.Render would print the same information but its lookups
// search the set list, which grows quadratically with the ruleset.
// TestFingerprintCoversModel keeps it complete when the model grows.
func fingerprint(rs model.Ruleset) [sha256.Size]byte {
	e := encoder{h: sha256.New(), b: make([]byte, 0, 64<<10)}
	e.str(rs.Table)
	e.int(len(rs.Sets))
	for _, s := range rs.Sets {
		e.str(s.Name)
		e.u8(uint8(s.Family))
		e.int(len(s.Key))
		for _, k := range s.Key {
			e.u8(uint8(k))
		}
		e.bool(s.Interval)
		e.bool(s.Verdicts)
		e.int(len(s.Elements))
		for _, el := range s.Elements {
			e.addr(el.Addr.From)
			e.addr(el.Addr.To)
			e.u8(el.Proto)
			e.u16(el.Port.From)
			e.u16(el.Port.To)
			e.verdict(el.Verdict)
		}
	}
	e.int(len(rs.Chains))
	for _, c := range rs.Chains {
		e.str(c.Name)
		e.bool(c.Hook != nil)
		if h := c.Hook; h != nil {
			e.str(h.Type)
			e.str(h.Hook)
			e.u32(uint32(h.Priority))
			e.u8(uint8(h.Policy))
		}
		e.int(len(c.Rules))
		for _, r := range c.Rules {
			e.u8(uint8(r.Family))
			e.str(r.Iif.Name)
			e.bool(r.Iif.Negate)
			e.str(r.Oif.Name)
			e.bool(r.Oif.Negate)
			e.u32(uint32(r.CtState))
			e.int(len(r.Matches))
			for _, m := range r.Matches {
				e.u8(uint8(m.Field))
				e.addr(m.Addr.From)
				e.addr(m.Addr.To)
				e.u8(m.Proto)
				e.u16(m.Port.From)
				e.u16(m.Port.To)
			}
			e.int(len(r.Lookups))
			for _, l := range r.Lookups {
				e.lookup(l)
			}
			e.bool(r.Counter)
			e.bool(r.Log != nil)
			if l := r.Log; l != nil {
				e.str(l.Prefix)
				e.u32(l.Rate)
				e.u32(l.Burst)
			}
			e.verdict(r.Verdict)
			e.str(r.Comment)
		}
	}
	return e.sum()
}

// encoder writes length-prefixed fields into a hash through a buffer.
type encoder struct {
	h hash.Hash
	b []byte
}

func (e *encoder) flush() {
	if len(e.b) >= 60<<10 {
		e.h.Write(e.b)
		e.b = e.b[:0]
	}
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v); e.flush() }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v); e.flush() }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v); e.flush() }
func (e *encoder) int(v int)    { e.b = binary.AppendUvarint(e.b, uint64(v)); e.flush() }

func (e *encoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

func (e *encoder) str(s string) {
	e.int(len(s))
	e.b = append(e.b, s...)
	e.flush()
}

func (e *encoder) addr(a netip.Addr) {
	e.u8(uint8(a.BitLen()))
	switch {
	case a.Is4():
		v := a.As4()
		e.b = append(e.b, v[:]...)
	case a.Is6():
		v := a.As16()
		e.b = append(e.b, v[:]...)
		e.str(a.Zone())
	}
	e.flush()
}

func (e *encoder) lookup(l model.Lookup) {
	e.int(len(l.Fields))
	for _, f := range l.Fields {
		e.u8(uint8(f))
	}
	e.str(l.Set)
	e.bool(l.Negate)
}

func (e *encoder) verdict(v model.Verdict) {
	e.u8(uint8(v.Kind))
	e.str(v.Chain)
	e.bool(v.Map != nil)
	if v.Map != nil {
		e.lookup(*v.Map)
	}
	e.addr(v.Addr)
}

func (e *encoder) sum() [sha256.Size]byte {
	e.h.Write(e.b)
	var out [sha256.Size]byte
	e.h.Sum(out[:0])
	return out
}
