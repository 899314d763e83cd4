package ops_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/anvil-metal/anvil/controller/ops"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// TestRPCLatency serves the health service with ops's server options and a
// 20 ms interceptor on a real socket, makes two unary calls and a stream,
// and reads /metrics: the unary method has two observations that include
// the interceptor's time; the stream has none.
func TestRPCLatency(t *testing.T) {
	o := ops.New(ops.Source{
		Ping:        func(context.Context) error { return nil },
		Machines:    func(context.Context) (map[anvilv1.MachineState]int, error) { return nil, nil },
		WaitStreams: func() int { return 0 },
	})
	slow := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		time.Sleep(20 * time.Millisecond)
		return h(ctx, req)
	}
	g := grpc.NewServer(append(o.ServerOptions(), grpc.ChainUnaryInterceptor(slow))...)
	o.RegisterHealth(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l) //nolint:errcheck // ends with Stop
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	wcancel()

	metrics := scrape(t, o)
	const check = `method="/grpc.health.v1.Health/Check"`
	if !strings.Contains(metrics, ops.RPCLatencyMetric+"_count{"+check+"} 2\n") {
		t.Errorf("want 2 Check calls observed in:\n%s", grep(metrics, ops.RPCLatencyMetric))
	}
	if strings.Contains(grep(metrics, ops.RPCLatencyMetric), "Watch") {
		t.Errorf("a stream was observed:\n%s", grep(metrics, ops.RPCLatencyMetric))
	}
	// Both calls sat 20 ms in the interceptor: none is in a bucket below it.
	if !strings.Contains(metrics, ops.RPCLatencyMetric+`_bucket{`+check+`,le="0.01`) {
		t.Fatalf("no bucket near 10 ms:\n%s", grep(metrics, ops.RPCLatencyMetric))
	}
	for _, line := range strings.Split(grep(metrics, ops.RPCLatencyMetric+"_bucket{"+check), "\n") {
		le, n, ok := bucket(line)
		if ok && le < 0.02 && n != "0" {
			t.Errorf("a call shorter than the interceptor's 20 ms: %s", line)
		}
	}
}

func scrape(t *testing.T, o *ops.Ops) string {
	t.Helper()
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// bucket splits `name{...,le="0.005"} 3` into 0.005 and "3".
func bucket(line string) (le float64, n string, ok bool) {
	_, rest, ok := strings.Cut(line, `le="`)
	if !ok {
		return 0, "", false
	}
	v, rest, ok := strings.Cut(rest, `"`)
	if !ok || v == "+Inf" {
		return 0, "", false
	}
	var f float64
	if _, err := fmt.Sscan(v, &f); err != nil {
		return 0, "", false
	}
	return f, strings.TrimSpace(strings.TrimPrefix(rest, "}")), true
}
