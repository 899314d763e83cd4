// Package ops is the controller's operations surface: Prometheus metrics of
// its RPCs (go-grpc-middleware's prometheus provider, and RPCLatency, a
// gRPC stats handler timing each unary call inside the server) and of its state
// (machines per state, open Wait streams, store round trips), the gRPC
// health service, and the HTTP endpoints an orchestrator or a load
// balancer asks: /metrics, /healthz (the process serves) and /readyz (the
// store answers).
package ops

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Source is what the metrics and the readiness check read from the
// controller.
type Source struct {
	// Ping asks the store for a round trip (readiness, store latency).
	Ping func(ctx context.Context) error
	// Machines counts machines per state.
	Machines func(ctx context.Context) (map[anvilv1.MachineState]int, error)
	// WaitStreams is how many agent Wait streams are open.
	WaitStreams func() int
	// Leader reports whether this controller runs the fleet's periodic
	// work (always with one controller; one replica of several).
	Leader func() bool
}

// ReadyTimeout bounds the store's answer to a readiness check.
const ReadyTimeout = 2 * time.Second

// Ops holds the metrics registry and the health state.
type Ops struct {
	src  Source
	reg  *prometheus.Registry
	rpc  *grpcprom.ServerMetrics
	lat  *RPCLatency
	ping prometheus.Histogram
	// storeTx times the store's transactions (Store).
	storeTx *prometheus.HistogramVec
	health  *health.Server
}

// New registers the controller's metrics.
func New(src Source) *Ops {
	o := &Ops{src: src, reg: prometheus.NewRegistry(), health: health.NewServer(),
		rpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()), lat: NewRPCLatency(),
		ping: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anvil_store_ping_seconds",
			Help: "Round trips to the store (readiness checks).", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		storeTx: newStoreTx(),
	}
	o.reg.MustRegister(o.rpc, o.lat, o.ping, o.storeTx, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "anvil_wait_streams", Help: "Agent Wait streams open."},
			func() float64 { return float64(src.WaitStreams()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "anvil_leader", Help: "1 while this controller runs the periodic work (the leader of its replicas)."},
			func() float64 {
				if src.Leader == nil || src.Leader() {
					return 1
				}
				return 0
			}),
		&machines{src: src})
	return o
}

// ServerOptions are the gRPC server's metrics interceptors, which run
// first so refused calls are counted too, and the RPCLatency stats
// handler.
func (o *Ops) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(o.lat),
		grpc.ChainUnaryInterceptor(o.rpc.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(o.rpc.StreamServerInterceptor())}
}

// RegisterHealth adds the gRPC health service (grpc.health.v1, no
// authentication: it tells only whether the controller serves) to g and
// initializes the RPC metrics of every registered method. Call it after
// every other service is registered.
func (o *Ops) RegisterHealth(g *grpc.Server) {
	healthpb.RegisterHealthServer(g, publicHealth{o.health})
	o.rpc.InitializeMetrics(g)
}

// publicHealth is the health service without authentication (the
// controller's auth interceptor asks each service how it authenticates).
type publicHealth struct{ *health.Server }

// AuthFuncOverride lets every caller ask.
func (publicHealth) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return ctx, nil
}

// Check pings the store and sets the gRPC health status from the answer;
// it returns the store's error.
func (o *Ops) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	t0 := time.Now()
	err := o.src.Ping(ctx)
	o.ping.Observe(time.Since(t0).Seconds())
	st := healthpb.HealthCheckResponse_SERVING
	if err != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	o.health.SetServingStatus("", st)
	return err
}

// Shutdown makes the health service answer NOT_SERVING from now on.
func (o *Ops) Shutdown() { o.health.Shutdown() }

// Handler serves /metrics, /healthz and /readyz.
func (o *Ops) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := o.Check(r.Context()); err != nil {
			http.Error(w, "store unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// machines collects anvil_machines{state} at each scrape.
type machines struct{ src Source }

var machinesDesc = prometheus.NewDesc("anvil_machines", "Machines per state.", []string{"state"}, nil)

func (m *machines) Describe(ch chan<- *prometheus.Desc) { ch <- machinesDesc }

func (m *machines) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	counts, err := m.src.Machines(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(machinesDesc, fmt.Errorf("count machines: %w", err))
		return
	}
	for st := range anvilv1.MachineState_name {
		s := anvilv1.MachineState(st)
		if s == anvilv1.MachineState_MACHINE_STATE_UNSPECIFIED {
			continue
		}
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(counts[s]), stateLabel(s))
	}
}

// stateLabel is "ready" for MACHINE_STATE_READY.
func stateLabel(s anvilv1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}
