//go:build !linux

package apply

import (
	"errors"

	"github.com/anvil-metal/anvil/firewall/model"
)

// ErrUnsupported is returned on systems without nf_tables.
var ErrUnsupported = errors.New("apply: nftables needs Linux")

// Applier programs rulesets into nftables; on this OS it cannot.
type Applier struct{}

// New fails: nftables exists only on Linux.
func New(opts ...Option) (*Applier, error) { return nil, ErrUnsupported }

// Apply fails: nftables exists only on Linux.
func (a *Applier) Apply(rs model.Ruleset) (bool, error) { return false, ErrUnsupported }

// Counters fails: nftables exists only on Linux.
func (a *Applier) Counters() (map[string]Counter, error) { return nil, ErrUnsupported }

// PacketCounts fails: nftables exists only on Linux.
func (a *Applier) PacketCounts() (map[string]uint64, error) { return nil, ErrUnsupported }

// Stats is empty: nothing is ever applied on this OS.
func (a *Applier) Stats() Stats { return Stats{} }

// Close does nothing.
func (a *Applier) Close() error { return nil }
