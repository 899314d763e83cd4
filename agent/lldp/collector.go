package lldp

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"google.golang.org/protobuf/proto"
)

// DefaultGrace is how long [Collector.Wait] keeps listening after the first
// frame for the other interfaces' neighbours: switches start sending on all
// ports at about the same time.
const DefaultGrace = 2 * time.Second

// recheck is how often Wait looks again at the interfaces' link state
// while no frame arrives.
const recheck = 250 * time.Millisecond

// ErrUnsupported is returned by [Collector.Listen] on systems other than
// Linux.
var ErrUnsupported = errors.New("listening for LLDP frames is only supported on Linux")

// Option configures a Collector.
type Option func(*Collector)

// WithLogger sets the logger (default: discard). New neighbours are logged
// at info level, malformed frames at warning level.
func WithLogger(l *slog.Logger) Option { return func(c *Collector) { c.log = l } }

// WithGrace sets how long Wait listens on after the first frame (default
// DefaultGrace).
func WithGrace(d time.Duration) Option { return func(c *Collector) { c.grace = d } }

// withClock replaces time.Now (tests).
func withClock(now func() time.Time) Option { return func(c *Collector) { c.now = now } }

// A Collector keeps the neighbours heard on a set of interfaces: the
// latest LLDPDU per interface, chassis ID and port ID (an MSAP identifier
// in IEEE 802.1AB's words), until its TTL runs out or a shutdown LLDPDU
// (TTL 0) removes it. It is safe for concurrent use.
type Collector struct {
	log   *slog.Logger
	grace time.Duration
	now   func() time.Time

	mu     sync.Mutex
	ports  map[string]*port
	first  time.Time     // the first valid LLDPDU on any interface
	change chan struct{} // closed (and replaced) when a frame is recorded
}

// port is one listened interface.
type port struct {
	// up says whether the interface is up and running; nil: always.
	up        func() bool
	heard     bool
	neighbors map[msap]heard
	// full: the last new neighbour was dropped (MaxNeighbors); logged once
	// per spell.
	full bool
}

// msap identifies a neighbour: its chassis and port (clause 6.5.2).
type msap struct{ chassisSub, chassis, portSub, port string }

// MaxNeighbors bounds the neighbours kept per interface (a port has one
// switch): frames from new neighbours beyond it are dropped, so a flood of
// forged LLDPDUs costs bounded memory and no inventory growth.
// MaxManagementAddresses bounds the addresses kept per neighbour.
const (
	MaxNeighbors           = 8
	MaxManagementAddresses = 8
)

type heard struct {
	n  *anvilv1.LLDPNeighbor
	at time.Time
}

// New returns a Collector listening on no interface yet ([Collector.Listen]
// adds them).
func New(opts ...Option) *Collector {
	c := &Collector{log: slog.New(slog.DiscardHandler), grace: DefaultGrace, now: time.Now,
		ports: map[string]*port{}, change: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	return c
}

// add registers an interface; false when it is registered already.
func (c *Collector) add(iface string, up func() bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.ports[iface]; ok {
		return false
	}
	c.ports[iface] = &port{up: up, neighbors: map[msap]heard{}}
	return true
}

// observe parses a frame received on iface and records its neighbour.
func (c *Collector) observe(iface string, frame []byte) error {
	n, err := Parse(frame)
	if err != nil {
		return err
	}
	c.record(iface, n)
	return nil
}

// record keeps n as the latest LLDPDU of its neighbour on iface, an
// interface added before; TTL 0 removes the neighbour (clause 9.2.7.7.2).
func (c *Collector) record(iface string, n *anvilv1.LLDPNeighbor) {
	now := c.now()
	k := msap{n.ChassisIdSubtype, n.ChassisId, n.PortIdSubtype, n.PortId}
	c.mu.Lock()
	p, ok := c.ports[iface]
	if !ok {
		c.mu.Unlock()
		return
	}
	_, known := p.neighbors[k]
	full := false
	switch {
	case n.TtlSeconds == 0:
		delete(p.neighbors, k)
	case !known && len(p.neighbors) >= MaxNeighbors:
		for mk, h := range p.neighbors {
			if now.Sub(h.at) > time.Duration(h.n.TtlSeconds)*time.Second {
				delete(p.neighbors, mk) // expired
			}
		}
		if full = len(p.neighbors) >= MaxNeighbors; !full {
			p.neighbors[k] = heard{n: n, at: now}
		}
	default:
		p.neighbors[k] = heard{n: n, at: now}
	}
	logFull := full && !p.full
	p.full = full
	p.heard = true
	if c.first.IsZero() {
		c.first = now
	}
	close(c.change)
	c.change = make(chan struct{})
	c.mu.Unlock()
	switch {
	case logFull:
		c.log.Warn("LLDP neighbour table full: frames from further neighbours dropped", "interface", iface, "max", MaxNeighbors)
	case full:
	case n.TtlSeconds == 0 && known:
		c.log.Info("LLDP neighbour left", "interface", iface, "chassis_id", n.ChassisId, "port_id", n.PortId)
	case n.TtlSeconds > 0 && !known:
		c.log.Info("LLDP neighbour", "interface", iface, "system_name", n.SystemName, "chassis_id", n.ChassisId,
			"port_id", n.PortId, "port_description", n.PortDescription, "vlan", n.Vlan, "ttl", n.TtlSeconds)
	}
}

// Neighbors returns copies of the neighbours currently known on iface
// (their TTL not run out), sorted by chassis ID and port ID.
func (c *Collector) Neighbors(iface string) []*anvilv1.LLDPNeighbor {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ports[iface]
	if !ok {
		return nil
	}
	var out []*anvilv1.LLDPNeighbor
	for _, h := range p.neighbors {
		if now.Sub(h.at) > time.Duration(h.n.TtlSeconds)*time.Second {
			continue
		}
		out = append(out, proto.Clone(h.n).(*anvilv1.LLDPNeighbor))
	}
	slices.SortFunc(out, func(a, b *anvilv1.LLDPNeighbor) int {
		if c := strings.Compare(a.ChassisId, b.ChassisId); c != 0 {
			return c
		}
		return strings.Compare(a.PortId, b.PortId)
	})
	return out
}

// Interfaces returns the interfaces listened on, sorted.
func (c *Collector) Interfaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name := range c.ports {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Wait returns when every listened interface that is up has heard an
// LLDPDU, when DefaultGrace (or WithGrace) has passed since the first
// LLDPDU on any interface (at once if that was long ago), or after max,
// whichever comes first; with no interface up it returns at once. Its
// error is ctx's when ctx ends first.
func (c *Collector) Wait(ctx context.Context, max time.Duration) error {
	deadline := c.now().Add(max)
	for {
		now := c.now()
		c.mu.Lock()
		until := deadline
		if !c.first.IsZero() && c.first.Add(c.grace).Before(until) {
			until = c.first.Add(c.grace)
		}
		all := c.allUpHeardLocked()
		change := c.change
		c.mu.Unlock()
		if all || !now.Before(until) {
			return nil
		}
		t := time.NewTimer(min(until.Sub(now), recheck))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-change:
		case <-t.C:
		}
		t.Stop()
	}
}

// allUpHeardLocked says whether every listened interface that is up has
// heard an LLDPDU.
func (c *Collector) allUpHeardLocked() bool {
	for _, p := range c.ports {
		if !p.heard && (p.up == nil || p.up()) {
			return false
		}
	}
	return true
}
