package integration

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// replicaProc is one anvil-controller process of the failover test.
type replicaProc struct {
	cmd           *exec.Cmd
	addr, metrics string
	op            harness.Operator
	dead          atomic.Bool // read by the load's goroutines
}

// waitStreams reads anvil_wait_streams from the replica's metrics.
func (r *replicaProc) waitStreams() (int, error) {
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "anvil_wait_streams "); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no anvil_wait_streams in %s's metrics (%v)", r.metrics, sc.Err())
}

// TestReplicaFailover runs three anvil-controller processes on one
// PostgreSQL and 24 agents (the real runner) given all three addresses.
// While machines are being allocated, one allocation every 50 ms through
// the live replicas in turn, the replica holding the most Wait streams is
// killed with SIGKILL, and later PostgreSQL itself is stopped as a crash
// stops it and started again. Every agent re-attaches within 30 s each
// time, and both sides count: each machine has exactly one allocation, one
// install instruction, executed once by its agent, one of each of its
// events (REGISTERING, ALLOCATED, BOOTING), and a watcher following the
// events through the failures receives each stored event exactly once, in
// seq order.
func TestReplicaFailover(t *testing.T) {
	const agents, replicas, reattach = 24, 3, 30 * time.Second
	pg := pgtest.New(t)
	dbName := pg.NewDatabase(t)
	url := pg.URL(dbName)
	bin := filepath.Join(t.TempDir(), "anvil-controller")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/anvil-metal/anvil/controller/cmd/anvil-controller").CombinedOutput(); err != nil {
		t.Fatalf("build anvil-controller: %v\n%s", err, out)
	}
	dir := t.TempDir()
	var procs []*replicaProc
	start := func(i int) *replicaProc {
		r := &replicaProc{addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), metrics: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))}
		r.cmd = exec.Command(bin, "--data-dir", dir, "--store", url, "--listen", r.addr, "--metrics-listen", r.metrics, "--log-level", "warn")
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		r.cmd.Stdout, r.cmd.Stderr = logf, logf
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if !r.dead.Load() {
				r.cmd.Process.Kill() //nolint:errcheck // ending the test
				r.cmd.Wait()         //nolint:errcheck // killed
			}
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("replica %d log:\n%s", i, b)
			}
		})
		harness.Eventually(t, 60*time.Second, func() error {
			resp, err := http.Get("http://" + r.metrics + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("replica %d: /readyz %s", i, resp.Status)
			}
			return nil
		})
		return r
	}
	for i := range replicas { // one after the other: the first creates the data directory
		procs = append(procs, start(i))
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, app.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	admin, bootTok := read(app.AdminTokenFile), read(app.BootTokenFile)
	var addrs []string
	for _, r := range procs {
		r.op = harness.OperatorOf(harness.DialAt(t, r.addr, caPEM, admin))
		addrs = append(addrs, r.addr)
	}
	live := func() []*replicaProc {
		var out []*replicaProc
		for _, r := range procs {
			if !r.dead.Load() {
				out = append(out, r)
			}
		}
		return out
	}
	streams := func() (total int, per []int, err error) {
		for _, r := range live() {
			n, err := r.waitStreams()
			if err != nil {
				return 0, nil, err
			}
			total += n
			per = append(per, n)
		}
		return total, per, nil
	}
	attached := func(what string, t0 time.Time) time.Duration {
		t.Helper()
		harness.Eventually(t, reattach-time.Since(t0), func() error {
			n, per, err := streams()
			if err == nil && n != agents {
				err = fmt.Errorf("%d Wait streams %v, want %d", n, per, agents)
			}
			return err
		})
		d := time.Since(t0)
		t.Logf("%s: all %d agents waiting again %v after it", what, agents, d.Round(time.Millisecond))
		return d
	}

	ags := make([]*harness.Agent, agents)
	for i := range ags {
		ags[i] = harness.StartAgentAt(t, harness.Logger(t).With("agent", i), strings.Join(addrs, ","), caPEM, harness.UUID(t.Name(), i), i, bootTok)
	}
	ctx := context.Background()
	waitStates(t, procs[0].op, anvilv1.MachineState_MACHINE_STATE_READY, agents, 90*time.Second)
	attached("registered", time.Now())
	_, per, err := streams()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Wait streams per replica: %v", per)
	if _, err := procs[0].op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "img", Url: "http://images.example/img.raw", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: "sha256:" + strings.Repeat("cd", 32), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}

	// The load: allocations through the live replicas in turn. A call that
	// fails without an answer (the replica died, the database restarted)
	// may or may not have committed: the next replica is asked; "already
	// allocated" then means it had.
	var mu sync.Mutex
	allocated := map[string]int{} // calls that said yes
	allocate := func(i int) error {
		id := ags[i].UUID
		var last error
		for attempt := range 60 {
			rs := live()
			r := rs[(i+attempt)%len(rs)]
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := r.op.Machines.AllocateMachine(cctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img", Hostname: fmt.Sprintf("web-%d", i)})
			cancel()
			switch status.Code(err) {
			case codes.OK:
				mu.Lock()
				allocated[id]++
				mu.Unlock()
				return nil
			case codes.FailedPrecondition:
				m, gerr := r.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
				if gerr == nil && m.GetAllocation().GetHostname() == fmt.Sprintf("web-%d", i) {
					return nil // an earlier attempt committed
				}
			}
			last = err
			time.Sleep(250 * time.Millisecond)
		}
		return fmt.Errorf("allocate %s: %w", id, last)
	}

	// A watcher on replica 0 follows every event through the failures,
	// resuming after its last seq when its stream breaks.
	var seen []int64
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		var after int64
		for watchCtx.Err() == nil {
			rs := live()
			stream, err := rs[len(rs)-1].op.Machines.WatchEvents(watchCtx, &anvilv1.WatchEventsRequest{AfterSeq: after})
			for err == nil {
				var e *anvilv1.Event
				if e, err = stream.Recv(); err == nil && e.GetSeq() > 0 {
					mu.Lock()
					seen = append(seen, e.GetSeq())
					mu.Unlock()
					after = e.GetSeq()
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, agents)
	allocRange := func(from, to int) {
		for i := from; i < to; i++ {
			wg.Go(func() {
				if err := allocate(i); err != nil {
					errs <- err
				}
			})
			time.Sleep(50 * time.Millisecond)
		}
	}
	allocRange(0, 8)
	// Kill the replica holding the most Wait streams.
	victim, most := -1, -1
	for i, r := range procs {
		n, err := r.waitStreams()
		if err != nil {
			t.Fatal(err)
		}
		if n > most {
			victim, most = i, n
		}
	}
	killed := time.Now()
	if err := procs[victim].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	procs[victim].cmd.Wait() //nolint:errcheck // killed
	procs[victim].dead.Store(true)
	t.Logf("killed replica %d (SIGKILL) holding %d Wait streams", victim, most)
	allocRange(8, 16)
	failover := attached("kill -9", killed)

	crashed := time.Now()
	if err := pg.Halt(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Log("PostgreSQL crashed and restarted")
	allocRange(16, agents)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	attached("PostgreSQL crash and restart", crashed)
	waitStates(t, live()[0].op, anvilv1.MachineState_MACHINE_STATE_BOOTING, agents, 60*time.Second)
	if failover > reattach {
		t.Errorf("failover took %v", failover)
	}

	// The agents' side: one install each, executed once; no erase.
	for i, a := range ags {
		installs, order := a.Install.Runs()
		wipes, _ := a.Wipe.Runs()
		if len(installs) != 1 || len(order) != 1 || len(wipes) != 0 {
			t.Errorf("agent %d executed installs %v (order %v) and erases %v; want one install, once", i, installs, order, wipes)
		}
	}
	// The controllers' side, from the database itself.
	db, err := sql.Open("pgx", pg.DSN(dbName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var instr, acked, ids int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COUNT(acked_at), COUNT(DISTINCT machine_id) FROM instructions").Scan(&instr, &acked, &ids); err != nil {
		t.Fatal(err)
	}
	if instr != agents || acked != agents || ids != agents {
		t.Errorf("instructions in the database: %d (%d acked) for %d machines; want exactly one acked install per machine", instr, acked, ids)
	}
	for _, a := range ags {
		evs, err := live()[0].op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: a.UUID})
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []anvilv1.EventType{anvilv1.EventType_EVENT_TYPE_REGISTERING, anvilv1.EventType_EVENT_TYPE_ALLOCATED, anvilv1.EventType_EVENT_TYPE_BOOTING} {
			if n := countType(evs.GetEvents(), typ); n != 1 {
				t.Errorf("machine %s: %d %s events, want 1", a.UUID, n, typ)
			}
		}
		if mu.Lock(); allocated[a.UUID] > 1 {
			t.Errorf("machine %s: %d allocate calls answered yes", a.UUID, allocated[a.UUID])
		}
		mu.Unlock()
	}
	var stored []int64
	rows, err := db.QueryContext(ctx, "SELECT seq FROM events ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(seen, stored) {
			return fmt.Errorf("the watcher received %d events, the database holds %d (first difference at %d)", len(seen), len(stored), firstDiff(seen, stored))
		}
		return nil
	})
	stopWatch()
	<-watchDone
}

// firstDiff is the first index at which a and b differ.
func firstDiff(a, b []int64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
