package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the debug address serves profiles, as the controller's does
	"os"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/anvil-metal/anvil/controller/ops"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// baseline is a bare AgentService: Register answers at once (telling the
// heartbeat interval, as the controller does), Heartbeat answers at once,
// and Wait sends headers, then a keepalive every keepalive interval, as
// the controller does on an idle stream. It is the transport floor anvil
// is compared to: gRPC, TLS and the same work per message on the wire.
type baseline struct {
	anvilv1.UnimplementedAgentServiceServer
	n                    atomic.Int64
	heartbeat, keepalive time.Duration
}

func (b *baseline) Register(context.Context, *anvilv1.RegisterRequest) (*anvilv1.RegisterResponse, error) {
	return &anvilv1.RegisterResponse{MachineId: strconv.FormatInt(b.n.Add(1), 10), Credential: "baseline",
		HeartbeatInterval: durationpb.New(b.heartbeat)}, nil
}

func (b *baseline) Heartbeat(context.Context, *anvilv1.HeartbeatRequest) (*anvilv1.HeartbeatResponse, error) {
	return &anvilv1.HeartbeatResponse{}, nil
}

func (b *baseline) Wait(_ *anvilv1.WaitRequest, s anvilv1.AgentService_WaitServer) error {
	if err := s.SendHeader(nil); err != nil {
		return err
	}
	keep := time.NewTimer(b.keepalive)
	defer keep.Stop()
	for {
		select {
		case <-s.Context().Done():
			return nil
		case <-keep.C:
			if err := s.Send(&anvilv1.Instruction{Kind: &anvilv1.Instruction_Keepalive{Keepalive: &anvilv1.Keepalive{}}}); err != nil {
				return err
			}
			keep.Reset(b.keepalive)
		}
	}
}

// serveBaseline runs the baseline server (agentload serve-baseline ...):
// the controller's transport options (controller/app and
// controller/server/grpc.go: TLS, keepalive policy, small shared buffers,
// stream and message bounds), ops.RPCLatency as its stats handler, and on
// the debug address pprof, /metrics and POST /debug/free-os-memory, as
// anvil-controller --debug-addr and --metrics-listen serve them.
func serveBaseline(args []string) error {
	fs := flag.NewFlagSet("serve-baseline", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "gRPC address")
	cert := fs.String("cert", "", "serving certificate")
	key := fs.String("key", "", "serving key")
	debugAddr := fs.String("debug", "", "pprof, /metrics and /debug/free-os-memory address")
	b := &baseline{}
	fs.DurationVar(&b.heartbeat, "heartbeat", 10*time.Second, "heartbeat interval told to agents")
	fs.DurationVar(&b.keepalive, "keepalive", 30*time.Second, "keepalive interval on Wait streams")
	buffers := fs.Int("buffers", 4<<10, "gRPC read and write buffer size per connection (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tlsCfg, err := pki.LoadServerTLS(*cert, *key)
	if err != nil {
		return err
	}
	lat := ops.NewRPCLatency()
	reg := prometheus.NewRegistry()
	reg.MustRegister(lat)
	http.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	http.HandleFunc("POST /debug/free-os-memory", func(w http.ResponseWriter, _ *http.Request) {
		debug.FreeOSMemory()
		fmt.Fprintln(w, "ok")
	})
	go func() {
		// net/http/pprof registers on http.DefaultServeMux.
		if err := http.ListenAndServe(*debugAddr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "baseline debug server:", err)
		}
	}()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.StatsHandler(lat), grpc.MaxConcurrentStreams(32), grpc.MaxRecvMsgSize(4<<20),
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.SharedWriteBuffer(true), grpc.ReadBufferSize(*buffers), grpc.WriteBufferSize(*buffers))
	anvilv1.RegisterAgentServiceServer(g, b)
	return g.Serve(l)
}
