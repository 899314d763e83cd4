package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/anvil-metal/anvil/agent/lldp"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// DefaultLLDPWait is the most the first inventory (the one Register sends)
// waits for the switches' LLDP frames when neither --lldp-wait nor
// anvil.lldp_wait= says otherwise. Switches send every 30 s by default
// and once when a port's link comes up; the agent listens from the moment
// its links exist, so the wait at registration is usually short: it ends
// as soon as every link that is up has heard a frame, or
// lldp.DefaultGrace after the first frame.
const DefaultLLDPWait = 5 * time.Second

// neighbors fills the inventory's NICs with the LLDP neighbours heard on
// them. A nil *neighbors (LLDP off) fills nothing.
type neighbors struct {
	c    *lldp.Collector
	max  time.Duration
	log  *slog.Logger
	once sync.Once
}

// newNeighbors returns nil when max is 0 (LLDP off).
func newNeighbors(max time.Duration, log *slog.Logger) *neighbors {
	if max <= 0 {
		return nil
	}
	log = log.With("phase", "lldp")
	return &neighbors{c: lldp.New(lldp.WithLogger(log)), max: max, log: log}
}

// listen starts listening on links until ctx ends. It is best effort: a
// link that cannot be listened on (no CAP_NET_RAW in host mode) is
// logged and goes without neighbours.
func (n *neighbors) listen(ctx context.Context, links []string) {
	if n == nil || len(links) == 0 {
		return
	}
	if err := n.c.Listen(ctx, links...); err != nil {
		n.log.Warn("not listening for LLDP on every link: their switch ports stay unknown", "links", links, "err", err)
		return
	}
	n.log.Info("listening for LLDP", "links", links)
}

// fill sets each NIC's LLDP neighbours. The first call waits for frames
// (lldp.Collector.Wait, at most n.max) and logs what was heard; later calls
// (re-registration, the wipe and install executors) use what is known by
// then without waiting.
func (n *neighbors) fill(ctx context.Context, inv *anvilv1.Inventory) {
	if n == nil {
		return
	}
	n.once.Do(func() {
		start := time.Now()
		if err := n.c.Wait(ctx, n.max); err != nil {
			n.log.Warn("LLDP wait cut short", "err", err)
			return
		}
		for _, link := range n.c.Interfaces() {
			heard := n.c.Neighbors(link)
			if len(heard) == 0 {
				n.log.Info("no LLDP neighbour heard", "link", link, "waited", time.Since(start).Round(time.Millisecond))
			}
			for _, h := range heard {
				n.log.Info("LLDP neighbour for the inventory", "link", link, "system_name", h.SystemName, "chassis_id", h.ChassisId,
					"port_id", h.PortId, "port_description", h.PortDescription, "vlan", h.Vlan, "waited", time.Since(start).Round(time.Millisecond))
			}
		}
	})
	for _, nic := range inv.GetNics() {
		nic.LldpNeighbors = n.c.Neighbors(nic.GetName())
	}
}
