package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// The controller keeps its state in PostgreSQL with --store postgres://...:
// real agents reach Ready, the controller is killed and restarted on the
// same database, and they are Ready again with their history; a PostgreSQL
// URL that cannot be reached is a clear error at start.
func TestControllerOnPostgres(t *testing.T) {
	c := pgtest.New(t)
	url := c.URL(c.NewDatabase(t))
	h := harness.StartController(t, t.TempDir(), func(cfg *app.Config) { cfg.Store = url })
	op := h.Operator()
	const n = 3
	for i := range n {
		h.StartAgent(t, harness.UUID(t.Name(), i), i)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, n, 60*time.Second)
	// A second controller on the same database is refused while this one
	// runs (replicas are not supported yet).
	second := app.Defaults()
	second.DataDir, second.Listen, second.Store = t.TempDir(), "127.0.0.1:0", url
	if _, err := app.Start(context.Background(), second, harness.Logger(t)); err == nil || !strings.Contains(err.Error(), "another anvil controller uses this database") {
		t.Errorf("a second controller on the database: %v", err)
	}
	h.Stop()
	h.Start()
	op = h.Operator()
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, n, 30*time.Second)
	r, err := op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: harness.UUID(t.Name(), 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetEvents()) < 2 {
		t.Errorf("history after the restart: %v", r.GetEvents())
	}

	// Nobody listens there: a clear error naming the store, password hidden.
	bad := app.Defaults()
	bad.DataDir, bad.Listen = t.TempDir(), "127.0.0.1:0"
	bad.Store = "postgres://anvil:secret@127.0.0.1:1/nope?sslmode=disable&connect_timeout=2"
	_, err = app.Start(context.Background(), bad, harness.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "open postgres") || strings.Contains(err.Error(), "secret") {
		t.Errorf("start on an unreachable PostgreSQL: %v", err)
	}
	bad.Store = "mysql://root:secret@db/anvil"
	if _, err := app.Start(context.Background(), bad, harness.Logger(t)); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("start with a foreign store URL: %v", err)
	}
}
