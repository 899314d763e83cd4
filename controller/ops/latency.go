package ops

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/stats"
)

// RPCLatencyMetric is the name of RPCLatency's histogram.
const RPCLatencyMetric = "anvil_grpc_server_rpc_seconds"

// RPCLatency is a gRPC stats handler (grpc.StatsHandler) that observes how
// long the server takes over each unary call, from stats.Begin (the
// request's headers are read and the method is known) to stats.End (the
// status is written): decoding, every interceptor, the handler and
// encoding, which an interceptor's own timing leaves out. Streams are not
// observed (their lifetime is the agent's wait, not a cost). Only methods
// the server serves reach Begin and End, so the method label is bounded by
// the registered services. It is a prometheus.Collector.
type RPCLatency struct {
	hist *prometheus.HistogramVec
}

var (
	_ stats.Handler        = (*RPCLatency)(nil)
	_ prometheus.Collector = (*RPCLatency)(nil)
)

// NewRPCLatency returns the handler with its histogram: buckets from
// 50 µs to 30 s, each 1.4 times the one before, fine enough to read a
// p99 of a few milliseconds.
func NewRPCLatency() *RPCLatency {
	return &RPCLatency{hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    RPCLatencyMetric,
		Help:    "Time the gRPC server spends on a unary call, from its headers read (stats.Begin) to its status written (stats.End), by full method name.",
		Buckets: prometheus.ExponentialBucketsRange(50e-6, 30, 40),
	}, []string{"method"})}
}

// rpcTag is what TagRPC hands to HandleRPC through the context.
type rpcTag struct {
	method string
	stream bool
}

type rpcTagKey struct{}

// TagRPC remembers the call's method.
func (l *RPCLatency) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcTagKey{}, &rpcTag{method: info.FullMethodName})
}

// HandleRPC observes a unary call's time at its End.
func (l *RPCLatency) HandleRPC(ctx context.Context, s stats.RPCStats) {
	tag, _ := ctx.Value(rpcTagKey{}).(*rpcTag)
	if tag == nil || s.IsClient() {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		tag.stream = s.IsClientStream || s.IsServerStream
	case *stats.End:
		if !tag.stream {
			l.hist.WithLabelValues(tag.method).Observe(s.EndTime.Sub(s.BeginTime).Seconds())
		}
	}
}

// TagConn does nothing: connections are not observed.
func (l *RPCLatency) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn does nothing.
func (l *RPCLatency) HandleConn(context.Context, stats.ConnStats) {}

// Describe implements prometheus.Collector.
func (l *RPCLatency) Describe(ch chan<- *prometheus.Desc) { l.hist.Describe(ch) }

// Collect implements prometheus.Collector.
func (l *RPCLatency) Collect(ch chan<- prometheus.Metric) { l.hist.Collect(ch) }
