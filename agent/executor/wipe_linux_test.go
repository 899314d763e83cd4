package executor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/erase"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

type nopProgress struct{}

func (nopProgress) Update(uint64, uint64) {}

func wipeOf(mode anvilv1.EraseMode, paths ...string) *anvilv1.Instruction {
	return &anvilv1.Instruction{Id: "in-1", Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: mode, Disks: paths}}}
}

func dirty(t *testing.T, dev string) {
	t.Helper()
	junk := []byte(strings.Repeat("GPT PART EFI\x00ext4\x53\xef", 200000))[:2<<20]
	if err := os.WriteFile(dev, junk, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWipeQuickOnAllowedLoopDevices(t *testing.T) {
	a, b, other := loopdev.New(t, 8<<20), loopdev.New(t, 8<<20), loopdev.New(t, 8<<20)
	for _, d := range []string{a, b, other} {
		dirty(t, d)
	}
	allow, err := disks.NewAllowlist([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: a}, {Path: b}, {Path: other}}}
	allow.Filter(inv)
	w := &Wipe{Allow: allow, Methods: DefaultMethods(), Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil }}
	out, err := w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_QUICK), nopProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if out.Type != anvilv1.EventType_EVENT_TYPE_WIPED || !strings.Contains(out.Message, a) || !strings.Contains(out.Message, b) {
		t.Fatalf("outcome %+v, want WIPED naming both disks", out)
	}
	for _, d := range []string{a, b} {
		if err := erase.Verify(d, erase.QuickRegions(8<<20, 4096)); err != nil {
			t.Errorf("allowed disk %s not erased: %v", d, err)
		}
	}
	if err := erase.Verify(other, erase.QuickRegions(8<<20, 4096)); err == nil {
		t.Errorf("disk %s off the allowlist was erased", other)
	}
}

func TestWipeRefusesWhatItCannotDo(t *testing.T) {
	dev := loopdev.New(t, 4<<20)
	dirty(t, dev)
	allow, err := disks.NewAllowlist([]string{dev})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: dev}}}
	w := &Wipe{Allow: allow, Methods: EraseMethods{}, Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil }}
	for _, mode := range []anvilv1.EraseMode{anvilv1.EraseMode_ERASE_MODE_SECURE, anvilv1.EraseMode_ERASE_MODE_FULL, anvilv1.EraseMode_ERASE_MODE_QUICK} {
		if _, err := w.Execute(context.Background(), wipeOf(mode), nopProgress{}); !errors.Is(err, ErrStepUnavailable) {
			t.Errorf("%s without methods: err %v, want ErrStepUnavailable", mode, err)
		}
	}
	if _, err := w.Execute(context.Background(), wipeOf(99), nopProgress{}); !errors.Is(err, ErrModeUnavailable) {
		t.Errorf("unknown mode: err %v, want ErrModeUnavailable", err)
	}
	if _, err := w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_QUICK, "/dev/sda"), nopProgress{}); err == nil {
		t.Error("wipe of a disk off the allowlist succeeded")
	}
	w.Methods = DefaultMethods()
	empty := &Wipe{Allow: allow, Methods: DefaultMethods(), Inventory: func(context.Context) (*anvilv1.Inventory, error) { return &anvilv1.Inventory{}, nil }}
	if _, err := empty.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_QUICK), nopProgress{}); err == nil {
		t.Error("wipe with no disk reported success")
	}
	// Nothing above touched the disk.
	if err := erase.Verify(dev, erase.QuickRegions(4<<20, 4096)); err == nil {
		t.Error("a refused wipe erased the disk")
	}
	out, err := w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_NONE), nopProgress{})
	if err != nil || out.Type != anvilv1.EventType_EVENT_TYPE_WIPED {
		t.Errorf("mode none: %+v, %v; want WIPED without erasing", out, err)
	}
}

func TestPowerInHostModeNeverTouchesTheHost(t *testing.T) {
	for _, off := range []bool{false, true} {
		p := &Power{HostMode: true, Off: off}
		out, err := p.Execute(context.Background(), nil, nopProgress{})
		if err != nil || out.Then == nil {
			t.Fatalf("off=%v: %+v, %v", off, out, err)
		}
		got := out.Then(context.Background())
		if want := map[bool]string{false: "restart", true: "stop"}[off]; got == nil || !strings.Contains(got.Error(), want) {
			t.Errorf("off=%v: Then() = %v, want the runner's %s request", off, got, want)
		}
	}
}

func TestWipeFullAndSecureFallbackOnLoopDevices(t *testing.T) {
	dev := loopdev.New(t, 16<<20)
	dirty(t, dev)
	allow, err := disks.NewAllowlist([]string{dev})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: dev, Controller: "loop"}}}
	ledger := &ZeroLedger{}
	w := &Wipe{Allow: allow, Methods: DefaultMethods(), Zeroed: ledger, Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil }}
	out, err := w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_FULL), nopProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Message, "BLKZEROOUT") || !ledger.Take(dev) {
		t.Errorf("full erase: %q; the ledger must know the disk reads as zeroes", out.Message)
	}
	if b, _ := os.ReadFile(dev); !bytes.Equal(b, make([]byte, 16<<20)) {
		t.Fatal("full erase left data")
	}

	// A loop device has no secure erase: without the policy the wipe fails
	// and says why; with it, a verified software erase is used and named.
	dirty(t, dev)
	secure := &anvilv1.Instruction{Id: "s", Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_SECURE}}}
	if _, err := w.Execute(context.Background(), secure, nopProgress{}); err == nil || !strings.Contains(err.Error(), "BLKSECDISCARD") || !strings.Contains(err.Error(), "erase-fallback") {
		t.Fatalf("secure erase without hardware support: err = %v", err)
	}
	secure.GetWipe().AllowFallback = true
	out, err = w.Execute(context.Background(), secure, nopProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Message, "fallback allowed by policy") {
		t.Errorf("secure erase with fallback: %q", out.Message)
	}
	if b, _ := os.ReadFile(dev); !bytes.Equal(b, make([]byte, 16<<20)) {
		t.Fatal("secure erase (fallback) left data")
	}
}

// protectedLoop is a loop device whose GPT names a partition label.
func protectedLoop(t *testing.T, label string) string {
	t.Helper()
	dev := loopdev.New(t, 8<<20)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 6143, Type: gpt.LinuxFilesystem, Name: label}}}
	if err := tbl.Write(f, 8<<20); err != nil {
		t.Fatal(err)
	}
	return dev
}

func TestWipeOfEveryDiskLeavesProtectedDisksAlone(t *testing.T) {
	plain, kept := loopdev.New(t, 8<<20), protectedLoop(t, disks.DefaultProtectLabel)
	dirty(t, plain)
	before, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	allow, err := disks.NewAllowlist([]string{plain, kept})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: plain}, {Path: kept}}}
	w := &Wipe{Allow: allow, Methods: DefaultMethods(), ProtectLabel: disks.DefaultProtectLabel,
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil }}
	out, err := w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_QUICK), nopProgress{})
	if err != nil {
		t.Fatalf("wipe of every disk with one protected: %v", err)
	}
	if !strings.Contains(out.Message, kept+" (protected)") {
		t.Errorf("outcome %q does not say the protected disk was left alone", out.Message)
	}
	if err := erase.Verify(plain, erase.QuickRegions(8<<20, 4096)); err != nil {
		t.Errorf("unprotected disk not erased: %v", err)
	}
	after, err := os.ReadFile(kept)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the protected disk changed (%v)", err)
	}
	// Named explicitly, a protected disk refuses the whole wipe.
	_, err = w.Execute(context.Background(), wipeOf(anvilv1.EraseMode_ERASE_MODE_QUICK, plain, kept), nopProgress{})
	if !errors.Is(err, disks.ErrProtected) {
		t.Fatalf("wipe naming a protected disk: %v, want ErrProtected", err)
	}
}
