package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// The controller's operations surface on real sockets: Prometheus metrics
// count RPCs (refused ones too), machines per state and Wait streams; the
// gRPC health service answers without credentials; /readyz fails, and the
// health service says NOT_SERVING, when the store (PostgreSQL here) stops
// answering.
func TestMetricsAndHealth(t *testing.T) {
	c := pgtest.New(t)
	url := c.URL(c.NewDatabase(t))
	h := harness.StartController(t, t.TempDir(), func(cfg *app.Config) { cfg.Store, cfg.MetricsListen = url, "127.0.0.1:0" })
	base := "http://" + h.Running().MetricsAddr.String()
	const n = 2
	for i := range n {
		h.StartAgent(t, harness.UUID(t.Name(), i), i)
	}
	waitStates(t, h.Operator(), anvilv1.MachineState_MACHINE_STATE_READY, n, 60*time.Second)
	// A refused call (no credentials) is counted too.
	if _, err := anvilv1.NewMachineServiceClient(h.Dial("")).ListMachines(context.Background(), &anvilv1.ListMachinesRequest{}); err == nil {
		t.Fatal("an operator call without a token succeeded")
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`anvil_machines{state="ready"} %d`, n),
		fmt.Sprintf("anvil_wait_streams %d", n),
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Register",grpc_service="anvil.v1.AgentService",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="ListMachines",grpc_service="anvil.v1.MachineService",grpc_type="unary"} 1`,
		"anvil_store_ping_seconds_count",
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with the store up: %d %s", code, body)
	}
	hc := healthpb.NewHealthClient(h.Dial(""))
	if r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health without credentials: %v %v, want SERVING", r, err)
	}

	// The database goes away: not ready, NOT_SERVING; the process lives.
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store unreachable") {
		t.Errorf("/readyz with the store down: %d %s", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the store down: %d, want 200 (the process serves)", code)
	}
	if r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health with the store down: %v %v, want NOT_SERVING", r, err)
	}
}
