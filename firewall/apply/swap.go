package apply

import (
	"fmt"
	"slices"
	"strings"
)

// The swap: why a table alternates between two names.
//
// Replacing a table in one transaction (delete it, define it again) has
// a window: nf_tables moves to the new generation — the new rules are
// live — and only afterwards calls each interval or concatenated set's
// commit operation, which publishes the set's elements (pipapo swaps in
// its new copy; rbtree, since 6.18, its lookup array). A packet in
// between sees the new rules with empty sets: a connection's first packet
// misses its allow set and is dropped. Measured under CPU load in
// test/firewall (TestPolicyUpdateWhileTrafficFlows).
//
// So a table that replaces a live one is created dormant (no hooks) in a
// first transaction, which commits its sets; a second transaction deletes
// the old table and wakes the new one. Waking registers the new table's
// hooks when the transaction is prepared and deleting unregisters the old
// ones when it commits, so in between a packet passes both tables: it is
// forwarded only when both rulesets allow it, which never drops what both
// allow and never lets through what either denies. Tables cannot be
// renamed, so the new table takes the name the old one does not have:
// the ruleset's name and AltTable of it, in turn.

// AltTable is the second name of a ruleset's table (see Apply).
func AltTable(name string) string { return name + "_b" }

// maxTableName is the longest table name the kernel takes
// (NFT_NAME_MAXLEN, 256 bytes with the terminating NUL).
const maxTableName = 255

// checkTableName refuses a table name the kernel would refuse, for
// either of its two names.
func checkTableName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: no table name", ErrInvalid)
	case len(AltTable(name)) > maxTableName:
		return fmt.Errorf("%w: table name of %d bytes (at most %d)", ErrInvalid, len(name), maxTableName-len(AltTable("")))
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: table name %q holds a NUL byte", ErrInvalid, name)
	}
	return nil
}

// liveTable is a table of family inet as the kernel listed it.
type liveTable struct {
	name    string
	dormant bool
}

// swapPlan is how one apply replaces what is in the kernel.
type swapPlan struct {
	// target is the name the ruleset's table is created under.
	target string
	// targetWas is target's state before the apply, nil when it does not
	// exist.
	targetWas *liveTable
	// dormant says the target is created dormant in a first transaction
	// and woken in a second, which also deletes drop; otherwise the
	// first and only transaction deletes drop.
	dormant bool
	// drop are the other tables of the ruleset's two names, and the
	// previously applied table when it had another name.
	drop []liveTable
}

// planSwap decides the target and what to delete, given the ruleset's
// table name, the table applied before ("" when none or unknown), and the
// tables of family inet the kernel holds. The target is the ruleset's
// name unless a live table has it; every other table of the two names, and
// previous, is deleted; the target is created dormant when a live table is
// deleted, so that traffic switches only when the second transaction
// commits.
func planSwap(name, previous string, tables []liveTable) swapPlan {
	find := func(n string) *liveTable {
		if i := slices.IndexFunc(tables, func(t liveTable) bool { return t.name == n }); i >= 0 {
			t := tables[i]
			return &t
		}
		return nil
	}
	p := swapPlan{target: name}
	if t := find(name); t != nil && !t.dormant {
		p.target = AltTable(name)
	}
	p.targetWas = find(p.target)
	others := []string{name, AltTable(name)}
	if previous != "" && !slices.Contains(others, previous) {
		others = append(others, previous)
	}
	for _, n := range others {
		if t := find(n); n != p.target && t != nil {
			p.drop = append(p.drop, *t)
			p.dormant = p.dormant || !t.dormant
		}
	}
	return p
}
