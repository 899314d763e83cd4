package executor

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// fakeDisk stands in for a drive's erase paths so the Wipe policy (order,
// fallback, verification) can be checked without the hardware.
type fakeDisk struct {
	mu       sync.Mutex
	calls    []StepKind
	fail     map[StepKind]error
	lies     map[StepKind]bool // reports success without erasing
	erased   bool
	verified int
	// ataPasswords are the passwords the ATA step was given.
	ataPasswords []string
}

func (f *fakeDisk) methods() EraseMethods {
	step := func(k StepKind) func(context.Context, string, ProgressFunc) (string, error) {
		return func(_ context.Context, _ string, p ProgressFunc) (string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls = append(f.calls, k)
			if err := f.fail[k]; err != nil {
				return "", err
			}
			if !f.lies[k] {
				f.erased = true
			}
			p(100, 100)
			return string(k) + " done", nil
		}
	}
	m := EraseMethods{Steps: map[StepKind]func(context.Context, string, ProgressFunc) (string, error){}}
	for _, k := range []StepKind{StepQuick, StepNVMe, StepSecDiscard, StepZeroOut, StepOverwrite} {
		m.Steps[k] = step(k)
	}
	ata := step(StepATA)
	m.ATA = func(ctx context.Context, path, password string, p ProgressFunc) (string, error) {
		f.mu.Lock()
		f.ataPasswords = append(f.ataPasswords, password)
		f.mu.Unlock()
		return ata(ctx, path, p)
	}
	m.VerifyZero = func(context.Context, string) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.verified++
		if !f.erased {
			return errors.New("byte at offset 4096 is not zero")
		}
		return nil
	}
	m.Markers = func(string) (func() error, error) {
		f.mu.Lock()
		f.erased = false
		f.mu.Unlock()
		return func() error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.verified++
			if !f.erased {
				return errors.New("marker at offset 1048576 still readable")
			}
			return nil
		}, nil
	}
	return m
}

var errFrozen = errors.New("ATA security frozen")

func wipeSecure(t *testing.T, f *fakeDisk, controller string, fallback bool) (*ZeroLedger, wipeResult, error) {
	t.Helper()
	ledger := &ZeroLedger{}
	w := &Wipe{Methods: f.methods(), Zeroed: ledger, Inventory: func(context.Context) (*anvilv1.Inventory, error) {
		return &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: "/dev/fake0", Controller: controller}}}, nil
	}}
	in := &anvilv1.Instruction{Id: "w", Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_SECURE, AllowFallback: fallback}}}
	out, err := w.Execute(context.Background(), in, nopProgress{})
	return ledger, wipeResult{out.Type, out.Message}, err
}

type wipeResult struct {
	Type    anvilv1.EventType
	Message string
}

func TestSecureEraseUsesTheHardwareAndProvesIt(t *testing.T) {
	f := &fakeDisk{}
	_, out, err := wipeSecure(t, f, "ata", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 || f.calls[0] != StepATA || f.verified != 1 || !strings.Contains(out.Message, "verified by markers") {
		t.Fatalf("calls %v, verified %d, message %q", f.calls, f.verified, out.Message)
	}
}

func TestTheWipesATAPasswordReachesTheATAStepOnly(t *testing.T) {
	const secret = "per-machine-secret-from-ctrl"
	f := &fakeDisk{}
	w := &Wipe{Methods: f.methods(), Inventory: func(context.Context) (*anvilv1.Inventory, error) {
		return &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: "/dev/fake0", Controller: "sata"}}}, nil
	}}
	in := &anvilv1.Instruction{Id: "w", Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_SECURE, AtaPassword: secret}}}
	notes := &noteRecorder{}
	out, err := w.Execute(context.Background(), in, notes)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.ataPasswords) != 1 || f.ataPasswords[0] != secret {
		t.Fatalf("the ATA step got %q, want the Wipe's ata_password", f.ataPasswords)
	}
	if strings.Contains(out.Message, secret) || strings.Contains(strings.Join(notes.notes, "\n"), secret) {
		t.Errorf("the password reached the event: %q / %q", out.Message, notes.notes)
	}
	// Without ata_password the step gets "" (the ata package's default).
	f = &fakeDisk{}
	if _, _, err := wipeSecure(t, f, "ata", false); err != nil || len(f.ataPasswords) != 1 || f.ataPasswords[0] != "" {
		t.Fatalf("no password: %q, %v", f.ataPasswords, err)
	}
}

// noteRecorder is a runner.Progress that keeps the notes.
type noteRecorder struct {
	nopProgress
	mu    sync.Mutex
	notes []string
}

func (n *noteRecorder) Note(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notes = append(n.notes, s)
}

func TestAFrozenDriveFailsUnlessPolicyAllowsTheFallback(t *testing.T) {
	unsupported := errors.New("BLKSECDISCARD: operation not supported")
	f := &fakeDisk{fail: map[StepKind]error{StepATA: errFrozen, StepSecDiscard: unsupported}}
	_, _, err := wipeSecure(t, f, "ata", false)
	if err == nil || !errors.Is(err, errFrozen) || !strings.Contains(err.Error(), "erase-fallback") {
		t.Fatalf("err = %v, want the frozen drive named and the policy explained", err)
	}
	for _, c := range f.calls {
		if c == StepZeroOut || c == StepOverwrite {
			t.Fatalf("software erase ran without the policy allowing it: %v", f.calls)
		}
	}

	f = &fakeDisk{fail: map[StepKind]error{StepATA: errFrozen, StepSecDiscard: unsupported}}
	ledger, out, err := wipeSecure(t, f, "ata", true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Message, "fallback allowed by policy") || !strings.Contains(out.Message, "frozen") {
		t.Errorf("message %q does not report the fallback and why", out.Message)
	}
	if !ledger.Take("/dev/fake0") {
		t.Error("a verified zeroing erase did not mark the disk zeroed")
	}
}

func TestAnEraseThatLiesIsCaught(t *testing.T) {
	// The hardware reports success but the markers survive: not erased.
	f := &fakeDisk{lies: map[StepKind]bool{StepNVMe: true, StepSecDiscard: true}}
	_, _, err := wipeSecure(t, f, "nvme", false)
	if err == nil || !strings.Contains(err.Error(), "still there") {
		t.Fatalf("err = %v, want the surviving markers reported", err)
	}
	// A zeroing step that skipped the disk fails its verification, and the
	// next step (overwrite) does the job.
	f = &fakeDisk{lies: map[StepKind]bool{StepZeroOut: true}}
	ledger := &ZeroLedger{}
	w := &Wipe{Methods: f.methods(), Zeroed: ledger, Inventory: func(context.Context) (*anvilv1.Inventory, error) {
		return &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: "/dev/fake0"}}}, nil
	}}
	out, err := w.Execute(context.Background(), &anvilv1.Instruction{Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_FULL}}}, nopProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 || f.calls[1] != StepOverwrite || !strings.Contains(out.Message, "overwrite done") {
		t.Errorf("calls %v, message %q", f.calls, out.Message)
	}
}
