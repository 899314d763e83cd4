package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/anvil-metal/anvil/agent/backoff"
	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/executor"
	"github.com/anvil-metal/anvil/agent/image"
	"github.com/anvil-metal/anvil/agent/image/fetch"
	"github.com/anvil-metal/anvil/agent/runner"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// TestInstallOverTheLoop drives a real agent (real runner, real Install
// executor) against a real controller: the operator registers an image
// served over HTTP and allocates the machine; the agent streams the image
// onto its loop device and reports BOOTING. A second image whose bytes do
// not match the catalogue's checksum fails the machine with the reason and
// leaves the disk without a partition table.
func TestInstallOverTheLoop(t *testing.T) {
	dev := loopdev.New(t, 32<<20)
	raw := make([]byte, 16<<20)
	r := rand.New(rand.NewPCG(9, 9))
	for i := 4 << 20; i < 10<<20; i++ {
		raw[i] = byte(r.Uint32())
	}
	// No partition table: nothing is grown (an image whose GPT is present
	// but unreadable fails the install: TestInstallOfAnImageWithADamagedGPTFails).
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := enc.EncodeAll(raw, nil)
	files := map[string][]byte{"/good.raw.zst": good, "/bad.raw.zst": append(bytes.Clone(good[:len(good)-16]), make([]byte, 16)...)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(b))
	}))
	defer srv.Close()

	h := harness.StartController(t, t.TempDir(), nil)
	op := h.Operator()
	ctx := context.Background()
	sum := sha256.Sum256(good)
	for _, id := range []string{"good", "bad"} {
		if _, err := op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
			Id: id, Url: srv.URL + "/" + id + ".raw.zst", Checksum: "sha256:" + hex.EncodeToString(sum[:]),
			Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD, Os: "test", Version: "1", Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
		}}); err != nil {
			t.Fatal(err)
		}
	}

	uuid := harness.UUID("install", 0)
	inv := harness.Inventory(uuid, 0)
	inv.Disks = []*anvilv1.Disk{{Name: "loop", Path: dev, SizeBytes: 32 << 20, Serial: "LOOP0", Kind: "disk"}} // allowlisted by the host agent
	invFn := func(context.Context) (*anvilv1.Inventory, error) { return inv, nil }
	allow, err := disks.NewAllowlist([]string{dev})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(h.CAPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	ledger := &executor.ZeroLedger{}
	rn, err := runner.New(runner.Config{
		Controller: h.Addr(), TLS: tlsCfg, BootToken: h.Running().BootToken, AgentVersion: "test",
		Inventory: invFn,
		Executors: runner.Executors{
			Install: &executor.Install{Allow: allow, Inventory: invFn, Zeroed: ledger,
				Image: image.Options{Source: fetch.Source(fetch.Options{})}},
			Wipe: &executor.Wipe{Allow: allow, Inventory: invFn, Zeroed: ledger, Methods: executor.DefaultMethods()},
		},
		Backoff: backoff.Policy{Base: 50 * time.Millisecond, Cap: time.Second},
	}, runner.WithLogger(harness.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rn.Run(rctx) }()
	defer func() { cancel(); <-done; rn.Close() }()

	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, 1, 30*time.Second)
	list, err := op.Machines.ListMachines(ctx, &anvilv1.ListMachinesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := list.GetMachines()[0].GetId()

	if _, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "good", Hostname: "web-1", TargetDisk: "LOOP0"}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_BOOTING, 1, 60*time.Second)
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("the disk does not hold the image")
	}
	ev, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	if msg := lastOf(ev.GetEvents(), anvilv1.EventType_EVENT_TYPE_BOOTING); !strings.Contains(msg, "sha256:") || !strings.Contains(msg, dev) {
		t.Errorf("BOOTING event %q does not name the verified digest and disk", msg)
	}

	// Reinstall with the corrupt image: the machine fails, with the reason.
	if _, err := op.Machines.ReinstallMachine(ctx, &anvilv1.ReinstallMachineRequest{Id: id, ImageId: "bad"}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_FAILED, 1, 60*time.Second)
	m, err := op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if reason := m.GetFailureReason(); !strings.Contains(reason, "checksum mismatch") || !strings.Contains(reason, "destroyed") {
		t.Errorf("failure reason %q does not say checksum mismatch and destroyed tables", reason)
	}
	got, err = os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) {
		t.Error("after a failed install the disk's first MiB (partition table) is still there")
	}

	// Free it with a full erase: the agent zeroes every block, reports the
	// disk's method as a milestone, and the machine is Ready again.
	if _, err := op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id, EraseMode: anvilv1.EraseMode_ERASE_MODE_FULL}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, op, anvilv1.MachineState_MACHINE_STATE_READY, 1, 60*time.Second)
	got, err = os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Error("a full erase left data on the disk")
	}
	ev, err = op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	if msg := lastOf(ev.GetEvents(), anvilv1.EventType_EVENT_TYPE_WIPED); !strings.Contains(msg, "BLKZEROOUT") || !strings.Contains(msg, "zero-sample") {
		t.Errorf("WIPED event %q does not name the method and its verification", msg)
	}
	var milestone bool
	for _, e := range ev.GetEvents() {
		milestone = milestone || e.GetType() == anvilv1.EventType_EVENT_TYPE_WIPING && strings.HasPrefix(e.GetMessage(), "erased "+dev)
	}
	if !milestone {
		t.Error("no per-disk milestone event while wiping")
	}
}

func lastOf(evs []*anvilv1.Event, typ anvilv1.EventType) string {
	msg := ""
	for _, e := range evs {
		if e.GetType() == typ {
			msg = e.GetMessage()
		}
	}
	return fmt.Sprint(msg)
}
