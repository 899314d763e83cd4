// Command powerrate measures the power actions per second anvil-controller
// sustains against IPMI BMCs — OpenIPMI simulators on loopback, one per
// machine, driven through the operator API with the controller's per-BMC
// serialisation — against a baseline measured in the same run: the same
// IPMI driver called directly, one caller per BMC (one session at a time
// per BMC, the most a BMC is asked to serve). Both sides ask for the same
// actions on the same simulators; the controller's callers are twice as
// many as the BMCs, so its serialisation is exercised.
//
//	go run ./test/bench/powerrate -bmcs 8 -seconds 5 -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

func main() {
	bmcs := flag.Int("bmcs", 8, "simulated BMCs (machines)")
	seconds := flag.Float64("seconds", 5, "length of each measurement")
	runs := flag.Int("runs", 3, "measurements per side (median shown)")
	flag.Parse()
	if err := run(*bmcs, time.Duration(*seconds*float64(time.Second)), *runs); err != nil {
		fmt.Fprintln(os.Stderr, "powerrate:", err)
		os.Exit(1)
	}
}

func run(n int, d time.Duration, runs int) error {
	dir, err := os.MkdirTemp("", "anvil-powerrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var addrs []string
	for i := range n {
		sdir := filepath.Join(dir, fmt.Sprintf("bmc%d", i))
		if err := os.MkdirAll(sdir, 0o755); err != nil {
			return err
		}
		port, err := ipmisim.FreePort()
		if err != nil {
			return err
		}
		s, stop, err := ipmisim.Run(sdir, port)
		if err != nil {
			return err
		}
		defer stop()
		addrs = append(addrs, s.Address(ipmisim.User, ipmisim.Password))
	}
	ctx := context.Background()
	c, err := app.Start(ctx, func() app.Config {
		cfg := app.Defaults()
		cfg.DataDir, cfg.Listen = filepath.Join(dir, "controller"), "127.0.0.1:0"
		return cfg
	}(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer c.Stop()
	ms, ids, err := machines(ctx, c, addrs)
	if err != nil {
		return err
	}
	fmt.Printf("%d IPMI BMCs (ipmi_sim on loopback, cipher suite 3), %v per measurement, median of %d\n", n, d, runs)
	for _, action := range []anvilv1.PowerAction{anvilv1.PowerAction_POWER_ACTION_STATUS, anvilv1.PowerAction_POWER_ACTION_RESET} {
		var base, ours []float64
		for range runs {
			b, err := direct(addrs, action, d)
			if err != nil {
				return err
			}
			o, err := viaController(ms, ids, action, d)
			if err != nil {
				return err
			}
			base, ours = append(base, b), append(ours, o)
		}
		mb, mo := median(base), median(ours)
		fmt.Printf("%-6s  baseline (driver, 1 caller per BMC): %7.1f/s [%.1f-%.1f]   anvil (operator API, 2 callers per BMC): %7.1f/s [%.1f-%.1f]   ratio %.2f×\n",
			actionName(action), mb, minOf(base), maxOf(base), mo, minOf(ours), maxOf(ours), mo/mb)
	}
	return nil
}

func actionName(a anvilv1.PowerAction) string {
	if a == anvilv1.PowerAction_POWER_ACTION_STATUS {
		return "status"
	}
	return "reset"
}

// machines registers one machine per BMC and sets its BMC.
func machines(ctx context.Context, c *app.Controller, addrs []string) (anvilv1.MachineServiceClient, []string, error) {
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := pki.ClientTLS(ca, "")
	if err != nil {
		return nil, nil, err
	}
	dial := func(tok string) (*grpc.ClientConn, error) {
		return grpc.NewClient(c.Addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithPerRPCCredentials(pki.Bearer(tok)))
	}
	opConn, err := dial(c.AdminToken)
	if err != nil {
		return nil, nil, err
	}
	agConn, err := dial(c.BootToken)
	if err != nil {
		return nil, nil, err
	}
	ms, agent := anvilv1.NewMachineServiceClient(opConn), anvilv1.NewAgentServiceClient(agConn)
	var ids []string
	for i, addr := range addrs {
		uuid := harness.UUID("powerrate", i)
		if _, err := agent.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, i)}); err != nil {
			return nil, nil, fmt.Errorf("register: %w", err)
		}
		if _, err := ms.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: uuid, Address: addr}); err != nil {
			return nil, nil, err
		}
		ids = append(ids, uuid)
	}
	return ms, ids, nil
}

// direct runs the action on every BMC through the driver, one caller each,
// with what the API also does: a reset is followed by a status read (the
// API answers with the resulting state).
func direct(addrs []string, action anvilv1.PowerAction, d time.Duration) (float64, error) {
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs))
	end := time.Now().Add(d)
	for _, a := range addrs {
		drv, err := bmc.Open(a)
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			for time.Now().Before(end) {
				var err error
				if action == anvilv1.PowerAction_POWER_ACTION_STATUS {
					_, err = drv.Status(context.Background())
				} else if err = drv.Reset(context.Background()); err == nil {
					// The API answers with the state after the action.
					_, err = drv.Status(context.Background())
				}
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(done.Load()) / d.Seconds(), nil
}

// viaController runs the action through the operator API, two callers per
// machine.
func viaController(ms anvilv1.MachineServiceClient, ids []string, action anvilv1.PowerAction, d time.Duration) (float64, error) {
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(ids))
	end := time.Now().Add(d)
	for _, id := range append(append([]string(nil), ids...), ids...) {
		wg.Go(func() {
			for time.Now().Before(end) {
				if _, err := ms.PowerMachine(context.Background(), &anvilv1.PowerMachineRequest{Id: id, Action: action}); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(done.Load()) / d.Seconds(), nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
