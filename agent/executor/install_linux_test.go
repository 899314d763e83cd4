package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/image"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

type countProgress struct{ n atomic.Int64 }

func (c *countProgress) Update(uint64, uint64) { c.n.Add(1) }

func installOf(target string, file []byte) *anvilv1.Instruction {
	sum := sha256.Sum256(file)
	return &anvilv1.Instruction{Id: "in-2", Kind: &anvilv1.Instruction_Install{Install: &anvilv1.Install{
		ImageId: "tiny", Url: "mem://tiny", Checksum: "sha256:" + hex.EncodeToString(sum[:]),
		Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, TargetDisk: target,
	}}}
}

func TestInstallWritesTheAllowedTargetAndReportsBooting(t *testing.T) {
	a, b := loopdev.New(t, 8<<20), loopdev.New(t, 8<<20)
	allow, err := disks.NewAllowlist([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: a, Serial: "SA"}, {Path: b, Serial: "SB"}}}
	file := bytes.Repeat([]byte("anvil image block\n"), 4<<20/18+1)
	file = file[:4<<20]
	ledger := &ZeroLedger{}
	ledger.MarkZeroed(b)
	var booted string
	x := &Install{
		Allow: allow, Zeroed: ledger,
		Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil },
		Image: image.Options{Source: func(context.Context, string) (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(file)), int64(len(file)), nil
		}},
		Lookup: func(string) (string, error) { return "kernel /boot/vmlinuz", nil },
		Boot:   func(_ context.Context, dev string, _ *anvilv1.Install) error { booted = dev; return nil },
	}
	p := &countProgress{}
	out, err := x.Execute(context.Background(), installOf("SB", file), p)
	if err != nil {
		t.Fatal(err)
	}
	if out.Type != anvilv1.EventType_EVENT_TYPE_BOOTING || !strings.Contains(out.Message, b) || !strings.Contains(out.Message, "kernel /boot/vmlinuz") {
		t.Fatalf("outcome %+v", out)
	}
	got, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(file)], file) {
		t.Fatal("target does not hold the image")
	}
	if ledger.Take(b) {
		t.Error("the ledger still says the written disk reads as zeroes")
	}
	if p.n.Load() == 0 {
		t.Error("no progress reported")
	}
	if err := out.Then(context.Background()); err != nil || booted != b {
		t.Errorf("Then: %v, booted %q", err, booted)
	}
	// The other disk was not touched.
	if other, _ := os.ReadFile(a); !bytes.Equal(other, make([]byte, 8<<20)) {
		t.Error("the install wrote to a disk it was not given")
	}
}

func TestInstallRefusesDisksOffTheAllowlist(t *testing.T) {
	a := loopdev.New(t, 4<<20)
	allow, err := disks.NewAllowlist([]string{a})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{{Path: a}, {Path: "/dev/sdz", Serial: "HOST"}}}
	x := &Install{Allow: allow, Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil },
		Image: image.Options{Source: func(context.Context, string) (io.ReadCloser, int64, error) {
			t.Fatal("the source was opened for a refused install")
			return nil, 0, nil
		}}}
	for _, target := range []string{"HOST", "/dev/sdz", "nonexistent"} {
		if _, err := x.Execute(context.Background(), installOf(target, nil), &countProgress{}); !errors.Is(err, ErrNoTarget) {
			t.Errorf("target %q: err = %v, want ErrNoTarget", target, err)
		}
	}
}
