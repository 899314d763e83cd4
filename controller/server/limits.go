package server

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// peerHost is the IP address of the call's client, "" when unknown, in
// the form ClientIP gives.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	return ClientIP(p.Addr.String())
}

// ClientIP is the IP address of a "host:port" remote address, without an
// IPv6 zone and with IPv4-mapped addresses unmapped, so that the boot
// service (HTTP) and the agent API (gRPC) name one client the same way.
func ClientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return a.WithZone("").Unmap().String()
}

// sourceLimiter is a token bucket per client address, for Register (the
// go-grpc-middleware ratelimit interceptor calls Limit). It tracks at most
// maxSources addresses; when full, idle buckets (full again) are dropped,
// and if none is idle the call is refused (a flood from invented
// addresses cannot grow it).
type sourceLimiter struct {
	every      rate.Limit
	burst      int
	maxSources int
	now        func() time.Time

	mu      sync.Mutex
	sources map[string]*rate.Limiter
}

func newSourceLimiter(perSecond float64, burst, maxSources int, now func() time.Time) *sourceLimiter {
	return &sourceLimiter{every: rate.Limit(perSecond), burst: burst, maxSources: maxSources, now: now, sources: map[string]*rate.Limiter{}}
}

// Limit refuses a Register beyond its source's rate; other methods pass.
func (l *sourceLimiter) Limit(ctx context.Context) error {
	if m, _ := grpc.Method(ctx); m != anvilv1.AgentService_Register_FullMethodName || l.every <= 0 {
		return nil
	}
	src := peerHost(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim := l.sources[src]
	if lim == nil {
		if len(l.sources) >= l.maxSources {
			for k, v := range l.sources {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.sources, k)
				}
			}
		}
		if len(l.sources) >= l.maxSources {
			return status.Errorf(codes.ResourceExhausted, "too many registering clients; retry later")
		}
		lim = rate.NewLimiter(l.every, l.burst)
		l.sources[src] = lim
	}
	if !lim.AllowN(now, 1) {
		return status.Errorf(codes.ResourceExhausted, "registrations from %s exceed %.3g per second; retry later", src, float64(l.every))
	}
	return nil
}

// streamCount bounds the Wait streams one machine holds at once.
type streamCount struct {
	mu    sync.Mutex
	n     map[string]int
	total int
}

// open is how many Wait streams are open.
func (c *streamCount) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// acquire counts a stream of id, or refuses when max are open.
func (c *streamCount) acquire(id string, max int) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[id] >= max {
		return nil, status.Errorf(codes.ResourceExhausted, "machine %s already holds %d Wait streams; close one first", id, max)
	}
	c.n[id]++
	c.total++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.total--
		if c.n[id]--; c.n[id] <= 0 {
			delete(c.n, id)
		}
	}, nil
}

// every lets one thing per key through per interval (security events of
// one machine), tracking at most max keys.
type every struct {
	interval time.Duration
	max      int
	mu       sync.Mutex
	last     map[string]time.Time
}

// allow reports whether key may act at now, and records it.
func (e *every) allow(key string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == nil {
		e.last = map[string]time.Time{}
	}
	if t, ok := e.last[key]; ok && now.Sub(t) < e.interval {
		return false
	}
	if len(e.last) >= e.max {
		for k, t := range e.last {
			if now.Sub(t) >= e.interval {
				delete(e.last, k)
			}
		}
		if len(e.last) >= e.max {
			return false
		}
	}
	e.last[key] = now
	return true
}
