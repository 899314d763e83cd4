package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the debug address serves profiles, as the controller's does
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	_ "modernc.org/sqlite" // the controller's SQLite driver, for -persist

	"github.com/anvil-metal/anvil/controller/ops"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// baseline is a bare AgentService: Register answers at once (telling the
// heartbeat interval, as the controller does), Heartbeat answers at once,
// and Wait sends headers, then a keepalive every keepalive interval, as
// the controller does on an idle stream. It is the transport floor anvil
// is compared to: gRPC, TLS and the same work per message on the wire.
//
// With -persist it is the floor of a controller that keeps what it is
// told: each Register also stores the machine's inventory in SQLite
// (the controller's driver, modernc.org/sqlite, with its settings: WAL,
// synchronous=NORMAL, one writer; the inventory zstd-compressed as the
// controller stores it), one upsert per registration, and nothing else.
type baseline struct {
	anvilv1.UnimplementedAgentServiceServer
	n                    atomic.Int64
	heartbeat, keepalive time.Duration
	upsert               *sql.Stmt     // -persist
	zenc                 *zstd.Encoder // -persist
}

func (b *baseline) Register(ctx context.Context, req *anvilv1.RegisterRequest) (*anvilv1.RegisterResponse, error) {
	id := strconv.FormatInt(b.n.Add(1), 10)
	if b.upsert != nil {
		inv, err := proto.Marshal(req.GetInventory())
		if err == nil {
			_, err = b.upsert.ExecContext(ctx, req.GetInventory().GetProduct().GetUuid(), b.zenc.EncodeAll(inv, nil), time.Now().UnixNano())
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "store the registration: %v", err)
		}
	}
	return &anvilv1.RegisterResponse{MachineId: id, Credential: "baseline",
		HeartbeatInterval: durationpb.New(b.heartbeat)}, nil
}

// persistTo opens the -persist database in dir and prepares the upsert.
func (b *baseline) persistTo(dir string) error {
	q := url.Values{}
	for _, p := range []string{"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "floor.db")+"?"+q.Encode())
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	if b.zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true)); err != nil {
		return err
	}
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS machines (uuid TEXT PRIMARY KEY, inventory BLOB NOT NULL, registered_at BIGINT NOT NULL)"); err != nil {
		return fmt.Errorf("create the floor's table: %w", err)
	}
	b.upsert, err = db.Prepare("INSERT INTO machines (uuid, inventory, registered_at) VALUES (?, ?, ?) " +
		"ON CONFLICT (uuid) DO UPDATE SET inventory = excluded.inventory, registered_at = excluded.registered_at")
	return err
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
	persist := fs.String("persist", "", "store each registration's inventory in SQLite in this directory (the floor of a controller)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *persist != "" {
		if err := b.persistTo(*persist); err != nil {
			return err
		}
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
