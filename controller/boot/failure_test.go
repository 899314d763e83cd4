package boot

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bootobs"
	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// installedMachines is a controller with one installed machine; it keeps
// the boot observations.
type installedMachines struct {
	mu  sync.Mutex
	obs []bootobs.Observation
}

func (f *installedMachines) BootLookup(context.Context, string, string) (*store.Machine, error) {
	return &store.Machine{ID: "m1", Allocation: &anvilv1.Allocation{ImageId: "tiny"},
		Status: lifecycle.Status{State: anvilv1.MachineState_MACHINE_STATE_PROVISIONED, Allocated: true, Installed: true}}, nil
}

func (f *installedMachines) ObserveBoot(o bootobs.Observation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.obs = append(f.obs, o)
}

func (f *installedMachines) MintBootToken(string, string, string) (string, error) {
	return "", errors.New("an installed machine gets no boot token")
}
func (f *installedMachines) PhoneHome(context.Context, string, string) (string, error) {
	return "", nil
}

// TestFailedSanbootIsObserved: iPXE's report of a failed boot from disk is
// observed with iPXE's error, and the machine is sent on; nothing is
// recorded as an event (the request is unauthenticated).
func TestFailedSanbootIsObserved(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"k", "i"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	cfg := Defaults()
	cfg.BaseURL, cfg.AgentController, cfg.CAFingerprint = "http://10.0.0.1:8080", "10.0.0.1:7443", "sha256:ab"
	cfg.Kernel, cfg.Initramfs = filepath.Join(dir, "k"), filepath.Join(dir, "i")
	m := &installedMachines{}
	s, err := New(cfg, m, WithLogger(slog.New(slog.DiscardHandler)), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(q string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/ipxe/script?uuid=0b1c2d3e-0000-4000-8000-00000000000a&mac=52:54:00:00:00:0a&platform=pcbios" + q)
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
	if body := get(""); !strings.Contains(body, "sanboot") {
		t.Fatalf("local boot script:\n%s", body)
	}
	if body := get("&failed=sanboot&error=0x3d126083"); !strings.Contains(body, "\nexit\n") {
		t.Fatalf("after the failure:\n%s", body)
	}
	if len(m.obs) != 2 || m.obs[0].Served != "local" || m.obs[0].Client != "127.0.0.1" || m.obs[0].Platform != "pcbios" ||
		!strings.Contains(m.obs[1].Served, "the previous boot from disk failed (iPXE sanboot of BIOS drive 0x80, error 0x3d126083)") {
		t.Fatalf("observations %+v", m.obs)
	}
}
