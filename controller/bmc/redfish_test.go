package bmc_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/test/labkit/redfish"
)

// memBackend is a machine in memory behind the Redfish test service.
type memBackend struct {
	mu   sync.Mutex
	on   bool
	boot string
}

func (m *memBackend) PowerOn(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on, nil
}

func (m *memBackend) SetPower(_ context.Context, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = on
	return nil
}

func (m *memBackend) Restart(context.Context) error { return nil }

func (m *memBackend) SetBoot(_ context.Context, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = target
	return nil
}

// garbage answers anything with HTML.
type garbage struct{}

func (garbage) ServeHTTP(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>not json") }

func redfishDriver(t *testing.T, srv *httptest.Server, creds, path string) bmc.Driver {
	t.Helper()
	d, err := bmc.Open("redfish+http://"+creds+"@"+strings.TrimPrefix(srv.URL, "http://")+path, bmc.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRedfishAgainstTestService(t *testing.T) {
	sys := &redfish.Service{Backend: &memBackend{}, User: "root", Password: "calvin", Allowed: []string{"On", "ForceOff", "GracefulRestart", "PowerCycle"}}
	srv := httptest.NewServer(sys)
	defer srv.Close()
	d := redfishDriver(t, srv, "root:calvin", "")
	ctx := context.Background()
	want := func(power bmc.PowerState, boot bmc.BootDevice) {
		t.Helper()
		st, err := d.Status(ctx)
		if err != nil || st.Power != power || st.NextBoot != boot {
			t.Fatalf("status %+v, %v; want %v, %v", st, err, power, boot)
		}
	}
	want(bmc.PowerOff, bmc.BootUnspecified)
	if err := d.SetNextBoot(ctx, bmc.BootPXE); err != nil {
		t.Fatal(err)
	}
	want(bmc.PowerOff, bmc.BootPXE)
	if err := d.Reset(ctx); err != nil { // off: powered on
		t.Fatal(err)
	}
	want(bmc.PowerOn, bmc.BootPXE)
	if err := d.Reset(ctx); err != nil { // on: the advertised restart (no ForceRestart here: PowerCycle)
		t.Fatal(err)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	want(bmc.PowerOff, bmc.BootPXE)
	acts := sys.Actions()
	wantActs := []string{"boot Pxe/Once/UEFI", "reset On", "reset PowerCycle", "reset ForceOff"}
	if !slices.Equal(acts, wantActs) {
		t.Fatalf("actions %q, want %q", acts, wantActs)
	}
}

func TestRedfishRefusals(t *testing.T) {
	back := &memBackend{on: true}
	sys := &redfish.Service{Backend: back, User: "root", Password: "calvin", Allowed: []string{"On"}}
	srv := httptest.NewServer(sys)
	defer srv.Close()
	ctx := context.Background()
	// No restart type advertised: a clear refusal, nothing posted.
	err := redfishDriver(t, srv, "root:calvin", "/redfish/v1/Systems/1").Reset(ctx)
	if !errors.Is(err, bmc.ErrRefused) || !strings.Contains(err.Error(), "none of") || len(sys.Actions()) != 0 {
		t.Fatalf("reset with no allowed restart type: %v", err)
	}
	// A wrong password: ErrAuth, nothing done, the password not shown.
	err = redfishDriver(t, srv, "root:wrongpw", "").PowerOff(ctx)
	if on, _ := back.PowerOn(ctx); !errors.Is(err, bmc.ErrAuth) || strings.Contains(err.Error(), "wrongpw") || !on {
		t.Fatalf("wrong password: %v (still on: %v)", err, on)
	}
	// A BMC answering garbage: a protocol error.
	junk := httptest.NewServer(garbage{})
	defer junk.Close()
	if _, err := redfishDriver(t, junk, "root:calvin", "/redfish/v1/Systems/1").Status(ctx); !errors.Is(err, bmc.ErrProtocol) {
		t.Fatalf("garbage answer: %v, want ErrProtocol", err)
	}
	// Nobody listening: unreachable, bounded.
	srv.Close()
	start := time.Now()
	if _, err := redfishDriver(t, srv, "root:calvin", "").Status(ctx); !errors.Is(err, bmc.ErrUnreachable) || time.Since(start) > 4*time.Second {
		t.Fatalf("closed service: %v after %v", err, time.Since(start))
	}
}
