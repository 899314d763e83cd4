// Package storetest is the conformance suite of the store.Store contract
// (package controller/store). Every implementation's tests call Run, so the
// SQLite and PostgreSQL stores are held to the same behaviour: field-exact
// round trips, the ErrNotFound and ErrAlreadyExists sentinels, atomic
// transactions (rollback on error and on panic), read-only views, the
// global event sequence, instruction delivery state, and concurrent writers.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call and arrange (with t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"MachineRoundTrip", testMachineRoundTrip},
		{"MachineZeroValues", testMachineZeroValues},
		{"MachineEmptyMessages", testMachineEmptyMessages},
		{"UpdateMachine", testUpdateMachine},
		{"TouchMachine", testTouchMachine},
		{"Uniqueness", testUniqueness},
		{"NotFound", testNotFound},
		{"InvalidInput", testInvalidInput},
		{"ListMachinesFilter", testListMachinesFilter},
		{"LightMachines", testLightMachines},
		{"DeleteMachineCascades", testDeleteMachineCascades},
		{"RollbackOnError", testRollbackOnError},
		{"RollbackOnPanic", testRollbackOnPanic},
		{"CancelledContext", testCancelledContext},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"EventRoundTrip", testEventRoundTrip},
		{"EventSeq", testEventSeq},
		{"ListEvents", testListEvents},
		{"LastEvents", testLastEvents},
		{"TrimEvents", testTrimEvents},
		{"Instructions", testInstructions},
		{"Images", testImages},
		{"Sizes", testSizes},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// --- helpers ---

// ts is a time with nanoseconds, in a non-UTC zone: stores must keep the
// instant to the nanosecond, not necessarily the zone.
func ts(sec int) time.Time {
	return time.Date(2025, 6, 7, 8, 9, 10+sec, 123456789, time.FixedZone("UTC+2", 2*60*60))
}

func mustTx(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Tx(t.Context(), fn); err != nil {
		t.Fatalf("Tx: %v", err)
	}
}

func mustView(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func minimal(id string) *store.Machine {
	return &store.Machine{ID: id, UUID: "uuid-" + id}
}

func create(t *testing.T, s store.Store, ms ...*store.Machine) {
	t.Helper()
	mustTx(t, s, func(tx store.Tx) error {
		for _, m := range ms {
			if err := tx.CreateMachine(t.Context(), m); err != nil {
				return err
			}
		}
		return nil
	})
}

func get(t *testing.T, s store.Store, id string) *store.Machine {
	t.Helper()
	var m *store.Machine
	mustView(t, s, func(tx store.Tx) (err error) {
		m, err = tx.GetMachine(t.Context(), id)
		return err
	})
	return m
}

func fullMachine(id string) *store.Machine {
	return &store.Machine{
		ID:   id,
		UUID: "4c4c4544-0042-3510-8052-b4c04f" + fmt.Sprintf("%06x", len(id)) + id,
		MACs: []string{"52:54:00:12:34:56", "52:54:00:12:34:57"},
		Inventory: &anvilv1.Inventory{
			Cpu:    &anvilv1.CPU{Vendor: "GenuineIntel", Model: "Xeon", Sockets: 2, Cores: 32, Threads: 64},
			Memory: &anvilv1.Memory{TotalBytes: 256 << 30, UsableBytes: 250 << 30},
			Disks: []*anvilv1.Disk{
				{Name: "nvme0n1", Path: "/dev/nvme0n1", Model: "PM9A3", Serial: "S1", Wwn: "eui.1", SizeBytes: 1 << 40, LogicalBlockSize: 512, PhysicalBlockSize: 4096, BusPath: "pci-0000:01:00.0-nvme-1"},
				{Name: "sda", Path: "/dev/sda", Rotational: true, Removable: true, Controller: "sata", SizeBytes: 4 << 40},
			},
			Nics: []*anvilv1.NIC{
				{Name: "eno1", Mac: "52:54:00:12:34:56", Driver: "ice", SpeedMbps: 25000, LinkUp: true, PciAddress: "0000:3b:00.0", Mtu: 9000},
				{Name: "eno2", Mac: "52:54:00:12:34:57", Virtual: true},
			},
			PciDevices: []*anvilv1.PCIDevice{{Address: "0000:3b:00.0", VendorId: "8086", ProductId: "159b", ClassId: "0200", Driver: "ice"}},
			Gpus:       []*anvilv1.GPU{{Address: "0000:af:00.0", Vendor: "NVIDIA", Model: "L4", Driver: "nvidia"}},
			Bios:       &anvilv1.BIOS{Vendor: "Dell", Version: "2.1", Date: "01/02/2024"},
			Product:    &anvilv1.Product{Vendor: "Dell", Name: "R650", Uuid: "4c4c4544", Serial: "ABC"},
		},
		SizeID: "c1-large",
		Labels: map[string]string{"rack": "r1", "zone": "a"},
		Allocation: &anvilv1.Allocation{
			ImageId: "debian-12", Hostname: "web-" + id, SshPublicKeys: []string{"ssh-ed25519 AAAA a@b"},
			UserData: "#cloud-config\n", TargetDisk: "/dev/nvme0n1", ExtraKernelCmdline: "console=ttyS0",
			AllocatedAt: timestamppb.New(ts(1)),
		},
		Status: lifecycle.Status{
			State: anvilv1.MachineState_MACHINE_STATE_PROVISIONED, FailureReason: "earlier failure",
			Allocated: true, LastEvent: anvilv1.EventType_EVENT_TYPE_PHONED_HOME, LastEventTime: ts(2),
			IncompleteCycles: 3, CrashLoop: true, ReclaimSince: ts(3), FailedReclaim: true,
		},
		CredentialHash: bytes.Repeat([]byte(id), 32)[:32],
		CreatedAt:      ts(4),
		LastSeen:       ts(5),
		Progress:       &anvilv1.Progress{BytesDone: 1 << 30, BytesTotal: 4 << 30, RateBytesPerSecond: 100 << 20},
		BMC:            "ipmi://admin:pw-" + id + "@192.0.2.10",
		Trust: store.Trust{BootTokensBefore: ts(6), ExpectBootSince: ts(5), ExpectBootUntil: ts(7), ExpectBootWhy: "freed",
			SessionAddr: "192.0.2.7", Held: true, Generation: 3, ATAPassword: "pw-" + id},
		HeldInventory: &anvilv1.Inventory{Product: &anvilv1.Product{Uuid: id}},
	}
}

// diffMachine lists how got differs from want. nil and empty MAC lists and
// label maps are the same; nil and empty messages are not.
func diffMachine(want, got *store.Machine) []string {
	var d []string
	add := func(field string, w, g any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if want.ID != got.ID {
		add("ID", want.ID, got.ID)
	}
	if want.UUID != got.UUID {
		add("UUID", want.UUID, got.UUID)
	}
	if !slices.Equal(want.MACs, got.MACs) {
		add("MACs", want.MACs, got.MACs)
	}
	if !msgEqual(want.Inventory, got.Inventory) {
		add("Inventory", want.Inventory, got.Inventory)
	}
	if want.SizeID != got.SizeID {
		add("SizeID", want.SizeID, got.SizeID)
	}
	if !maps.Equal(want.Labels, got.Labels) {
		add("Labels", want.Labels, got.Labels)
	}
	if !msgEqual(want.Allocation, got.Allocation) {
		add("Allocation", want.Allocation, got.Allocation)
	}
	if s := diffStatus(want.Status, got.Status); s != "" {
		d = append(d, s)
	}
	if !bytes.Equal(want.CredentialHash, got.CredentialHash) {
		add("CredentialHash", want.CredentialHash, got.CredentialHash)
	}
	if !want.CreatedAt.Equal(got.CreatedAt) {
		add("CreatedAt", want.CreatedAt, got.CreatedAt)
	}
	if !want.LastSeen.Equal(got.LastSeen) {
		add("LastSeen", want.LastSeen, got.LastSeen)
	}
	if !msgEqual(want.Progress, got.Progress) {
		add("Progress", want.Progress, got.Progress)
	}
	if want.BMC != got.BMC {
		add("BMC", want.BMC, got.BMC)
	}
	wt, gt := want.Trust, got.Trust
	for _, tt := range [][2]*time.Time{{&wt.BootTokensBefore, &gt.BootTokensBefore}, {&wt.ExpectBootSince, &gt.ExpectBootSince}, {&wt.ExpectBootUntil, &gt.ExpectBootUntil}} {
		if !tt[0].Equal(*tt[1]) || tt[1].Location() != time.UTC {
			add("Trust time (UTC)", *tt[0], *tt[1])
		}
		*tt[0], *tt[1] = time.Time{}, time.Time{}
	}
	if wt != gt {
		add("Trust", want.Trust, got.Trust)
	}
	if !msgEqual(want.HeldInventory, got.HeldInventory) {
		add("HeldInventory", want.HeldInventory, got.HeldInventory)
	}
	return d
}

// msgEqual is proto.Equal that also tells a nil message from an empty one
// (proto.Equal does; this names the intent).
func msgEqual[M proto.Message](a, b M) bool { return proto.Equal(a, b) }

func diffStatus(w, g lifecycle.Status) string {
	tw, tg := w, g
	tw.LastEventTime, tg.LastEventTime = time.Time{}, time.Time{}
	tw.ReclaimSince, tg.ReclaimSince = time.Time{}, time.Time{}
	if tw != tg || !w.LastEventTime.Equal(g.LastEventTime) || !w.ReclaimSince.Equal(g.ReclaimSince) {
		return fmt.Sprintf("Status: got %+v, want %+v", g, w)
	}
	return ""
}

func checkMachine(t *testing.T, what string, want, got *store.Machine) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil machine", what)
	}
	for _, d := range diffMachine(want, got) {
		t.Errorf("%s: %s", what, d)
	}
}

func ids(ms []*store.Machine) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func seqs(evs []*anvilv1.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.GetSeq()
	}
	return out
}

func appendEvents(t *testing.T, s store.Store, machineID string, n int) []int64 {
	t.Helper()
	var out []int64
	mustTx(t, s, func(tx store.Tx) error {
		for i := range n {
			e := &anvilv1.Event{MachineId: machineID, Type: anvilv1.EventType_EVENT_TYPE_WAITING, Message: fmt.Sprint(i)}
			if err := tx.AppendEvent(t.Context(), e); err != nil {
				return err
			}
			out = append(out, e.Seq)
		}
		return nil
	})
	return out
}

func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// --- machines ---

func testMachineRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := fullMachine("m1")
	create(t, s, want)
	checkMachine(t, "GetMachine", want, get(t, s, "m1"))
	mustTx(t, s, func(tx store.Tx) error {
		// Inside a write transaction too, before and after commit.
		m, err := tx.GetMachine(ctx, "m1")
		if err != nil {
			return err
		}
		checkMachine(t, "GetMachine in Tx", want, m)
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		m, err := tx.GetMachineByUUID(ctx, want.UUID)
		if err != nil {
			return err
		}
		checkMachine(t, "GetMachineByUUID", want, m)
		id, err := tx.MachineIDByCredential(ctx, want.CredentialHash)
		if err != nil {
			return err
		}
		if id != want.ID {
			t.Errorf("MachineIDByCredential = %q, want %q", id, want.ID)
		}
		ms, err := tx.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			return err
		}
		if len(ms) != 1 {
			t.Fatalf("ListMachines: %d machines, want 1", len(ms))
		}
		checkMachine(t, "ListMachines", want, ms[0])
		return nil
	})
}

func testMachineZeroValues(t *testing.T, s store.Store) {
	want := minimal("m1")
	create(t, s, want)
	got := get(t, s, "m1")
	checkMachine(t, "minimal", want, got)
	if got.Inventory != nil || got.Allocation != nil || got.Progress != nil {
		t.Errorf("nil messages came back non-nil: inventory %v allocation %v progress %v", got.Inventory, got.Allocation, got.Progress)
	}
	if !got.CreatedAt.IsZero() || !got.LastSeen.IsZero() || !got.Status.LastEventTime.IsZero() || !got.Status.ReclaimSince.IsZero() {
		t.Errorf("zero times came back non-zero: %v %v %+v", got.CreatedAt, got.LastSeen, got.Status)
	}
	if len(got.CredentialHash) != 0 {
		t.Errorf("CredentialHash = %x, want none", got.CredentialHash)
	}
	// The Unix epoch is a time like any other, not the zero time.
	epoch := minimal("m2")
	epoch.CreatedAt = time.Unix(0, 0)
	epoch.LastSeen = time.Unix(0, 1)
	create(t, s, epoch)
	got = get(t, s, "m2")
	checkMachine(t, "epoch", epoch, got)
	if got.CreatedAt.IsZero() {
		t.Error("CreatedAt at the epoch came back as the zero time")
	}
}

func testMachineEmptyMessages(t *testing.T, s store.Store) {
	want := minimal("m1")
	want.Inventory = &anvilv1.Inventory{}
	want.Allocation = &anvilv1.Allocation{}
	want.Progress = &anvilv1.Progress{}
	want.MACs = []string{}
	want.Labels = map[string]string{}
	create(t, s, want)
	got := get(t, s, "m1")
	checkMachine(t, "empty messages", want, got)
	if got.Inventory == nil || got.Allocation == nil || got.Progress == nil {
		t.Errorf("empty messages came back nil: inventory %v allocation %v progress %v", got.Inventory, got.Allocation, got.Progress)
	}
	// An empty allocation is still an allocation.
	yes := true
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(t.Context(), store.MachineFilter{Allocated: &yes})
		if err != nil {
			return err
		}
		if !slices.Equal(ids(ms), []string{"m1"}) {
			t.Errorf("allocated machines = %v, want [m1]", ids(ms))
		}
		return nil
	})
}

func testUpdateMachine(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := fullMachine("m1")
	create(t, s, orig)

	// Every field changes, and the optional ones are cleared.
	upd := minimal("m1")
	upd.UUID = "other-uuid"
	upd.MACs = []string{"aa:bb:cc:dd:ee:ff"}
	upd.Inventory = &anvilv1.Inventory{Cpu: &anvilv1.CPU{Cores: 1}}
	upd.SizeID = "small"
	upd.Labels = map[string]string{"k": "v"}
	upd.Status = lifecycle.Status{State: anvilv1.MachineState_MACHINE_STATE_READY, LastEventTime: ts(9)}
	upd.CreatedAt = ts(10)
	upd.BMC = "redfish://root:pw@192.0.2.11/redfish/v1/Systems/1"
	upd.Trust.Generation++
	upd.Trust.ExpectBootUntil = time.Time{}
	upd.HeldInventory = nil
	mustTx(t, s, func(tx store.Tx) error { return tx.UpdateMachine(ctx, upd) })
	checkMachine(t, "after update", upd, get(t, s, "m1"))

	mustView(t, s, func(tx store.Tx) error {
		_, err := tx.GetMachineByUUID(ctx, orig.UUID)
		wantIs(t, "old UUID after update", err, store.ErrNotFound)
		_, err = tx.MachineIDByCredential(ctx, orig.CredentialHash)
		wantIs(t, "old credential after update", err, store.ErrNotFound)
		return nil
	})

	// And back: setting the optional fields again.
	orig.Labels["new"] = "label"
	mustTx(t, s, func(tx store.Tx) error { return tx.UpdateMachine(ctx, orig) })
	checkMachine(t, "after second update", orig, get(t, s, "m1"))
}

func testTouchMachine(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := fullMachine("m1")
	create(t, s, want)
	at := ts(100)
	mustTx(t, s, func(tx store.Tx) error { return tx.TouchMachine(ctx, "m1", at) })
	want.LastSeen = at
	checkMachine(t, "after touch", want, get(t, s, "m1"))
	// Never back: a batch of last-seen times written late (another
	// replica's) does not undo a newer one.
	mustTx(t, s, func(tx store.Tx) error { return tx.TouchMachine(ctx, "m1", ts(50)) })
	checkMachine(t, "after an older touch", want, get(t, s, "m1"))
}

func testUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := minimal("a")
	a.CredentialHash = []byte("credential-a")
	b := minimal("b")
	b.CredentialHash = []byte("credential-b")
	c := minimal("c") // no credential
	d := minimal("d") // no credential either: absent hashes never collide
	create(t, s, a, b, c, d)

	sameID := minimal("a")
	sameID.UUID = "fresh"
	sameUUID := minimal("x")
	sameUUID.UUID = a.UUID
	sameCred := minimal("y")
	sameCred.CredentialHash = a.CredentialHash
	for _, tc := range []struct {
		name string
		m    *store.Machine
	}{{"id", sameID}, {"uuid", sameUUID}, {"credential", sameCred}} {
		err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateMachine(ctx, tc.m) })
		wantIs(t, "create with taken "+tc.name, err, store.ErrAlreadyExists)
	}

	b2 := get(t, s, "b")
	b2.UUID = a.UUID
	err := s.Tx(ctx, func(tx store.Tx) error { return tx.UpdateMachine(ctx, b2) })
	wantIs(t, "update to taken uuid", err, store.ErrAlreadyExists)
	b2 = get(t, s, "b")
	b2.CredentialHash = a.CredentialHash
	err = s.Tx(ctx, func(tx store.Tx) error { return tx.UpdateMachine(ctx, b2) })
	wantIs(t, "update to taken credential", err, store.ErrAlreadyExists)

	// Nothing changed.
	checkMachine(t, "b after refused updates", b, get(t, s, "b"))
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			return err
		}
		if got := ids(ms); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
			t.Errorf("machines = %v, want [a b c d]", got)
		}
		return nil
	})
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("present"))
	at := ts(0)
	checks := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"GetMachine", func(tx store.Tx) error { _, err := tx.GetMachine(ctx, "nope"); return err }},
		{"GetMachineByUUID", func(tx store.Tx) error { _, err := tx.GetMachineByUUID(ctx, "nope"); return err }},
		{"MachineIDByCredential", func(tx store.Tx) error { _, err := tx.MachineIDByCredential(ctx, []byte("nope")); return err }},
		{"UpdateMachine", func(tx store.Tx) error { return tx.UpdateMachine(ctx, minimal("nope")) }},
		{"DeleteMachine", func(tx store.Tx) error { return tx.DeleteMachine(ctx, "nope") }},
		{"TouchMachine", func(tx store.Tx) error { return tx.TouchMachine(ctx, "nope", at) }},
		{"AppendEvent", func(tx store.Tx) error {
			return tx.AppendEvent(ctx, &anvilv1.Event{MachineId: "nope", Type: anvilv1.EventType_EVENT_TYPE_WAITING})
		}},
		{"CreateInstruction", func(tx store.Tx) error {
			return tx.CreateInstruction(ctx, &store.Instruction{ID: "i1", MachineID: "nope", Instruction: &anvilv1.Instruction{Id: "i1"}})
		}},
		{"GetInstruction", func(tx store.Tx) error { _, err := tx.GetInstruction(ctx, "nope"); return err }},
		{"AckInstruction", func(tx store.Tx) error { _, err := tx.AckInstruction(ctx, "nope", at); return err }},
		{"GetImage", func(tx store.Tx) error { _, err := tx.GetImage(ctx, "nope"); return err }},
		{"DeleteImage", func(tx store.Tx) error { return tx.DeleteImage(ctx, "nope") }},
		{"GetSize", func(tx store.Tx) error { _, err := tx.GetSize(ctx, "nope"); return err }},
		{"DeleteSize", func(tx store.Tx) error { return tx.DeleteSize(ctx, "nope") }},
	}
	for _, c := range checks {
		err := s.Tx(ctx, c.fn)
		wantIs(t, c.name, err, store.ErrNotFound)
		if errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("%s: %v is also ErrAlreadyExists", c.name, err)
		}
	}
	// Nothing pending for an unknown machine is not an error.
	mustTx(t, s, func(tx store.Tx) error {
		if err := tx.CancelPending(ctx, "nope", at); err != nil {
			return err
		}
		ins, err := tx.PendingInstructions(ctx, "nope")
		if len(ins) != 0 {
			t.Errorf("pending of unknown machine: %v", ins)
		}
		return err
	})
}

func testInvalidInput(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("m1"))
	checks := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"machine without id", func(tx store.Tx) error { return tx.CreateMachine(ctx, &store.Machine{UUID: "u"}) }},
		{"machine without uuid", func(tx store.Tx) error { return tx.CreateMachine(ctx, &store.Machine{ID: "m2"}) }},
		{"update to empty uuid", func(tx store.Tx) error { return tx.UpdateMachine(ctx, &store.Machine{ID: "m1"}) }},
		{"instruction payload id differs", func(tx store.Tx) error {
			return tx.CreateInstruction(ctx, &store.Instruction{ID: "i1", MachineID: "m1", Instruction: &anvilv1.Instruction{Id: "i2"}})
		}},
		{"instruction without payload", func(tx store.Tx) error {
			return tx.CreateInstruction(ctx, &store.Instruction{ID: "i1", MachineID: "m1"})
		}},
		{"image without id", func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Url: "http://x"}) }},
		{"size without id", func(tx store.Tx) error { return tx.CreateSize(ctx, &anvilv1.Size{}) }},
		{"negative limit", func(tx store.Tx) error { _, err := tx.ListEvents(ctx, "m1", 0, -1); return err }},
		{"negative keep", func(tx store.Tx) error { return tx.TrimEvents(ctx, "m1", -1) }},
	}
	for _, c := range checks {
		if err := s.Tx(ctx, c.fn); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(ctx, store.MachineFilter{})
		if got := ids(ms); !slices.Equal(got, []string{"m1"}) {
			t.Errorf("machines = %v, want [m1]", got)
		}
		return err
	})
}

func testListMachinesFilter(t *testing.T, s store.Store) {
	ready := anvilv1.MachineState_MACHINE_STATE_READY
	prov := anvilv1.MachineState_MACHINE_STATE_PROVISIONED
	mk := func(id string, st anvilv1.MachineState, size, host string, labels map[string]string) *store.Machine {
		m := minimal(id)
		m.Status.State = st
		m.SizeID = size
		m.Labels = labels
		if host != "-" {
			m.Allocation = &anvilv1.Allocation{Hostname: host, ImageId: "img"}
		}
		return m
	}
	withBMC := func(m *store.Machine) *store.Machine {
		m.BMC = "sealed:" + m.ID
		return m
	}
	// Created out of order: results come ordered by id.
	create(t, s,
		withBMC(mk("m4", prov, "large", "db-1", map[string]string{"rack": "r2"})),
		mk("m1", ready, "small", "-", map[string]string{"rack": "r1", "gpu": "yes"}),
		mk("m3", prov, "small", "web-1", nil),
		withBMC(mk("m2", ready, "large", "-", map[string]string{"rack": "r1"})),
		mk("m5", ready, "small", "", map[string]string{"rack": "r2"}), // allocated, empty hostname
	)
	var counts map[anvilv1.MachineState]int
	if err := s.View(t.Context(), func(tx store.Tx) error {
		var err error
		counts, err = tx.CountMachinesByState(t.Context())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(counts) != 2 || counts[ready] != 3 || counts[prov] != 2 {
		t.Errorf("CountMachinesByState = %v, want 3 ready and 2 provisioned", counts)
	}
	yes, no := true, false
	for _, tc := range []struct {
		name string
		f    store.MachineFilter
		want []string
	}{
		{"all", store.MachineFilter{}, []string{"m1", "m2", "m3", "m4", "m5"}},
		{"state", store.MachineFilter{State: ready}, []string{"m1", "m2", "m5"}},
		{"size", store.MachineFilter{SizeID: "small"}, []string{"m1", "m3", "m5"}},
		{"allocated", store.MachineFilter{Allocated: &yes}, []string{"m3", "m4", "m5"}},
		{"not allocated", store.MachineFilter{Allocated: &no}, []string{"m1", "m2"}},
		{"hostname", store.MachineFilter{Hostname: "web-1"}, []string{"m3"}},
		{"hostname prefix is no match", store.MachineFilter{Hostname: "web"}, nil},
		{"label", store.MachineFilter{Labels: map[string]string{"rack": "r1"}}, []string{"m1", "m2"}},
		{"labels all must match", store.MachineFilter{Labels: map[string]string{"rack": "r1", "gpu": "yes"}}, []string{"m1"}},
		{"label value differs", store.MachineFilter{Labels: map[string]string{"rack": "r3"}}, nil},
		{"combined", store.MachineFilter{State: ready, SizeID: "small", Allocated: &no}, []string{"m1"}},
		{"combined with labels", store.MachineFilter{State: ready, Labels: map[string]string{"rack": "r2"}}, []string{"m5"}},
		{"nothing", store.MachineFilter{State: anvilv1.MachineState_MACHINE_STATE_FAILED}, nil},
		{"with a BMC", store.MachineFilter{WithBMC: true}, []string{"m2", "m4"}},
		{"with a BMC, ready", store.MachineFilter{WithBMC: true, State: ready}, []string{"m2"}},
		{"light", store.MachineFilter{Light: true}, []string{"m1", "m2", "m3", "m4", "m5"}},
		{"light with labels", store.MachineFilter{Light: true, Labels: map[string]string{"rack": "r2"}}, []string{"m4", "m5"}},
	} {
		mustView(t, s, func(tx store.Tx) error {
			ms, err := tx.ListMachines(t.Context(), tc.f)
			if got := ids(ms); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
			return err
		})
	}
	// The duplicated filter columns follow updates.
	mustTx(t, s, func(tx store.Tx) error {
		m, err := tx.GetMachine(t.Context(), "m3")
		if err != nil {
			return err
		}
		m.Allocation = nil
		m.Status.State = ready
		return tx.UpdateMachine(t.Context(), m)
	})
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(t.Context(), store.MachineFilter{State: ready, Allocated: &no})
		if got := ids(ms); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
			t.Errorf("after update: got %v, want [m1 m2 m3]", got)
		}
		if err != nil {
			return err
		}
		ms, err = tx.ListMachines(t.Context(), store.MachineFilter{Hostname: "web-1"})
		if len(ms) != 0 {
			t.Errorf("hostname of a freed machine still matches: %v", ids(ms))
		}
		return err
	})
}

// testLightMachines: a machine read without its inventories has every
// other field, and writing it back changes those fields and keeps the
// stored inventories; a Light machine that carries an inventory, or is
// created, is refused.
func testLightMachines(t *testing.T, s store.Store) {
	ctx := t.Context()
	full := fullMachine("m1")
	create(t, s, full, minimal("m2"))
	want := *full
	want.Inventory, want.HeldInventory = nil, nil
	check := func(how string, m *store.Machine) {
		t.Helper()
		if !m.Light {
			t.Errorf("%s: Light is false", how)
		}
		if m.Inventory != nil || m.HeldInventory != nil {
			t.Errorf("%s: inventories read: %v, %v", how, m.Inventory, m.HeldInventory)
		}
		if d := diffMachine(&want, m); len(d) > 0 {
			t.Errorf("%s differs: %v", how, d)
		}
	}
	var light *store.Machine
	mustView(t, s, func(tx store.Tx) error {
		var err error
		if light, err = tx.GetMachineLight(ctx, "m1"); err != nil {
			return err
		}
		check("GetMachineLight", light)
		ms, err := tx.ListMachines(ctx, store.MachineFilter{Light: true})
		if err != nil {
			return err
		}
		if len(ms) != 2 {
			t.Fatalf("ListMachines(Light): %d machines, want 2", len(ms))
		}
		check("ListMachines(Light)", ms[0])
		if ms[1].Light != true || ms[1].ID != "m2" {
			t.Errorf("ListMachines(Light)[1] = %s, Light %v", ms[1].ID, ms[1].Light)
		}
		full, err := tx.GetMachine(ctx, "m1")
		if err != nil {
			return err
		}
		if full.Light {
			t.Error("GetMachine returned a Light machine")
		}
		_, err = tx.GetMachineLight(ctx, "nope")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMachineLight of a missing machine: %v, want ErrNotFound", err)
		}
		return nil
	})
	// Written back: the other fields change, the inventories stay.
	light.Status.State = anvilv1.MachineState_MACHINE_STATE_READY
	light.Labels = map[string]string{"after": "light update"}
	light.LastSeen = ts(20)
	mustTx(t, s, func(tx store.Tx) error { return tx.UpdateMachine(ctx, light) })
	after := get(t, s, "m1")
	want2 := *full
	want2.Status.State, want2.Labels, want2.LastSeen = light.Status.State, light.Labels, light.LastSeen
	checkMachine(t, "after a light update", &want2, after)
	// A Light machine that carries an inventory would lose it silently:
	// refused, and nothing changes.
	for _, tc := range []struct {
		name string
		mod  func(*store.Machine)
	}{
		{"inventory", func(m *store.Machine) { m.Inventory = &anvilv1.Inventory{Product: &anvilv1.Product{Name: "other"}} }},
		{"held inventory", func(m *store.Machine) { m.HeldInventory = &anvilv1.Inventory{} }},
	} {
		m := *light
		m.Labels = map[string]string{"lost": "update"}
		tc.mod(&m)
		if err := s.Tx(ctx, func(tx store.Tx) error { return tx.UpdateMachine(ctx, &m) }); err == nil {
			t.Errorf("UpdateMachine of a Light machine with its %s: no error", tc.name)
		}
	}
	checkMachine(t, "after refused light updates", &want2, get(t, s, "m1"))
	m3 := *light
	m3.ID, m3.UUID, m3.CredentialHash = "m3", "uuid-m3", nil
	if err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateMachine(ctx, &m3) }); err == nil {
		t.Error("CreateMachine of a Light machine: no error")
	}
}

func testDeleteMachineCascades(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("gone"), minimal("kept"))
	appendEvents(t, s, "gone", 3)
	keptSeqs := appendEvents(t, s, "kept", 2)
	mustTx(t, s, func(tx store.Tx) error {
		for _, id := range []string{"gone-1", "gone-2"} {
			if err := tx.CreateInstruction(ctx, &store.Instruction{ID: id, MachineID: "gone", Instruction: &anvilv1.Instruction{Id: id}, CreatedAt: ts(0)}); err != nil {
				return err
			}
		}
		return tx.CreateInstruction(ctx, &store.Instruction{ID: "kept-1", MachineID: "kept", Instruction: &anvilv1.Instruction{Id: "kept-1"}, CreatedAt: ts(0)})
	})
	mustTx(t, s, func(tx store.Tx) error { return tx.DeleteMachine(ctx, "gone") })

	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.GetMachine(ctx, "gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMachine after delete: %v", err)
		}
		evs, err := tx.ListEvents(ctx, "", 0, 0)
		if err != nil {
			return err
		}
		if got := seqs(evs); !slices.Equal(got, keptSeqs) {
			t.Errorf("events after delete: seqs %v, want %v (only the kept machine's)", got, keptSeqs)
		}
		for _, id := range []string{"gone-1", "gone-2"} {
			if _, err := tx.GetInstruction(ctx, id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("instruction %s after delete: %v", id, err)
			}
		}
		if _, err := tx.GetInstruction(ctx, "kept-1"); err != nil {
			t.Errorf("other machine's instruction: %v", err)
		}
		return nil
	})

	// A machine re-created with the same id starts with no history.
	create(t, s, minimal("gone"))
	mustView(t, s, func(tx store.Tx) error {
		evs, err := tx.ListEvents(ctx, "gone", 0, 0)
		if len(evs) != 0 {
			t.Errorf("re-created machine inherited events %v", seqs(evs))
		}
		if err != nil {
			return err
		}
		ins, err := tx.PendingInstructions(ctx, "gone")
		if len(ins) != 0 {
			t.Errorf("re-created machine inherited %d instructions", len(ins))
		}
		return err
	})
}

// --- transactions ---

// writeEverything writes one of each kind of record, as a request would.
func writeEverything(ctx context.Context, tx store.Tx, existing string) error {
	if err := tx.CreateMachine(ctx, minimal("new")); err != nil {
		return err
	}
	m, err := tx.GetMachine(ctx, existing)
	if err != nil {
		return err
	}
	m.SizeID = "changed"
	if err := tx.UpdateMachine(ctx, m); err != nil {
		return err
	}
	if err := tx.AppendEvent(ctx, &anvilv1.Event{MachineId: existing, Type: anvilv1.EventType_EVENT_TYPE_WAITING}); err != nil {
		return err
	}
	if err := tx.CreateInstruction(ctx, &store.Instruction{ID: "in", MachineID: existing, Instruction: &anvilv1.Instruction{Id: "in"}}); err != nil {
		return err
	}
	if err := tx.CreateImage(ctx, &anvilv1.Image{Id: "img"}); err != nil {
		return err
	}
	if err := tx.CreateSize(ctx, &anvilv1.Size{Id: "size"}); err != nil {
		return err
	}
	return tx.DeleteMachine(ctx, "victim")
}

// checkUntouched verifies that nothing writeEverything does is visible.
func checkUntouched(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			return err
		}
		if got := ids(ms); !slices.Equal(got, []string{"old", "victim"}) {
			t.Errorf("machines = %v, want [old victim]", got)
		}
		if m, err := tx.GetMachine(ctx, "old"); err != nil || m.SizeID != "" {
			t.Errorf("old machine: %+v, %v; want it unchanged", m, err)
		}
		evs, err := tx.ListEvents(ctx, "", 0, 0)
		if err != nil {
			return err
		}
		if len(evs) != 0 {
			t.Errorf("events = %v, want none", evs)
		}
		if _, err := tx.GetInstruction(ctx, "in"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("instruction: %v, want ErrNotFound", err)
		}
		if _, err := tx.GetImage(ctx, "img"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("image: %v, want ErrNotFound", err)
		}
		if _, err := tx.GetSize(ctx, "size"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("size: %v, want ErrNotFound", err)
		}
		return nil
	})
}

func testRollbackOnError(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("old"), minimal("victim"))
	boom := errors.New("boom")
	err := s.Tx(ctx, func(tx store.Tx) error {
		if err := writeEverything(ctx, tx, "old"); err != nil {
			return err
		}
		return boom
	})
	if err != boom { // the contract: returned as is, not wrapped
		t.Errorf("Tx returned %v, want the error of fn as is", err)
	}
	checkUntouched(t, s)

	// A failing store call that fn passes on rolls back the calls before it.
	err = s.Tx(ctx, func(tx store.Tx) error {
		if err := tx.CreateImage(ctx, &anvilv1.Image{Id: "img"}); err != nil {
			return err
		}
		return tx.CreateMachine(ctx, minimal("old"))
	})
	wantIs(t, "Tx ending in a duplicate", err, store.ErrAlreadyExists)
	checkUntouched(t, s)
}

func testRollbackOnPanic(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("old"), minimal("victim"))
	type sentinel struct{ v int }
	func() {
		defer func() {
			if p := recover(); p != (sentinel{42}) {
				t.Errorf("recovered %v, want the panic of fn", p)
			}
		}()
		_ = s.Tx(ctx, func(tx store.Tx) error {
			if err := writeEverything(ctx, tx, "old"); err != nil {
				t.Errorf("writeEverything: %v", err)
			}
			panic(sentinel{42})
		})
		t.Error("Tx returned after fn panicked")
	}()
	checkUntouched(t, s)
	// The store is still usable: the write connection was released.
	done := make(chan error, 1)
	go func() {
		done <- s.Tx(ctx, func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Id: "after"}) })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Tx after panic: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tx after a panicking Tx hangs: the transaction was not released")
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateImage(ctx, &anvilv1.Image{Id: "img"})
	})
	wantIs(t, "Tx with cancelled context", err, context.Canceled)
	err = s.View(ctx, func(tx store.Tx) error {
		_, err := tx.ListImages(ctx)
		return err
	})
	wantIs(t, "View with cancelled context", err, context.Canceled)
	mustView(t, s, func(tx store.Tx) error {
		_, err := tx.GetImage(t.Context(), "img")
		wantIs(t, "image written under a cancelled context", err, store.ErrNotFound)
		return nil
	})
}

func testViewIsReadOnly(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("m1"))
	writes := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"CreateImage", func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Id: "img"}) }},
		{"CreateMachine", func(tx store.Tx) error { return tx.CreateMachine(ctx, minimal("m2")) }},
		{"TouchMachine", func(tx store.Tx) error { return tx.TouchMachine(ctx, "m1", ts(0)) }},
		{"AppendEvent", func(tx store.Tx) error {
			return tx.AppendEvent(ctx, &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_WAITING})
		}},
		{"DeleteMachine", func(tx store.Tx) error { return tx.DeleteMachine(ctx, "m1") }},
	}
	for _, w := range writes {
		if err := s.View(ctx, w.fn); err == nil {
			t.Errorf("%s in View: no error", w.name)
		}
	}
	checkMachine(t, "m1 after writes in View", minimal("m1"), get(t, s, "m1"))
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.GetImage(ctx, "img"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("image written in View: %v", err)
		}
		if _, err := tx.GetMachine(ctx, "m2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("machine written in View: %v", err)
		}
		evs, err := tx.ListEvents(ctx, "", 0, 0)
		if len(evs) != 0 {
			t.Errorf("events written in View: %v", evs)
		}
		return err
	})
}

// --- events ---

func testEventRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("m1"))
	full := &anvilv1.Event{
		MachineId: "m1", Time: timestamppb.New(ts(1)), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
		Message: "writing image debian-12", InstructionId: "in-1",
		Progress: &anvilv1.Progress{BytesDone: 10, BytesTotal: 100, RateBytesPerSecond: 5},
	}
	bare := &anvilv1.Event{MachineId: "m1"}
	emptyProgress := &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_WIPING, Progress: &anvilv1.Progress{}, Time: timestamppb.New(time.Unix(0, 0))}
	// Who caused an event is kept apart from its message: a message with
	// control characters stays a message and names no actor.
	acted := &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_POWER, Actor: "operator 0a1b2c3d from 192.0.2.7", Message: "power on"}
	actorOnly := &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_BMC, Actor: "controller (test)"}
	forged := &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_FAILED, Message: "\x1eoperator x\x1fdisk gone"}
	forgedActed := &anvilv1.Event{MachineId: "m1", Type: anvilv1.EventType_EVENT_TYPE_FAILED, Actor: "controller (x)", Message: "\x1ea\x1fb"}
	in := []*anvilv1.Event{full, bare, emptyProgress, acted, actorOnly, forged, forgedActed}
	mustTx(t, s, func(tx store.Tx) error {
		for _, e := range in {
			if err := tx.AppendEvent(ctx, e); err != nil {
				return err
			}
			if e.Seq <= 0 {
				t.Errorf("AppendEvent set Seq %d, want > 0", e.Seq)
			}
		}
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		evs, err := tx.ListEvents(ctx, "m1", 0, 0)
		if err != nil {
			return err
		}
		if len(evs) != len(in) {
			t.Fatalf("got %d events, want %d", len(evs), len(in))
		}
		for i, e := range evs {
			if !proto.Equal(e, in[i]) {
				t.Errorf("event %d: got %v, want %v", i, e, in[i])
			}
		}
		return nil
	})
}

func testEventSeq(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("a"), minimal("b"), minimal("c"))
	var all []int64
	for i := range 5 {
		// Interleaved across machines, several per transaction.
		mustTx(t, s, func(tx store.Tx) error {
			for _, id := range []string{"a", "b", "a"} {
				e := &anvilv1.Event{MachineId: id, Message: fmt.Sprint(i)}
				if err := tx.AppendEvent(ctx, e); err != nil {
					return err
				}
				all = append(all, e.Seq)
			}
			return nil
		})
	}
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("seqs not strictly increasing: %v", all)
		}
	}
	// A rolled-back append does not make a later seq go backwards, and a
	// deleted machine's seqs are never handed out again.
	_ = s.Tx(ctx, func(tx store.Tx) error {
		_ = tx.AppendEvent(ctx, &anvilv1.Event{MachineId: "c"})
		return errors.New("rollback")
	})
	last := appendEvents(t, s, "c", 1)[0]
	if last <= all[len(all)-1] {
		t.Fatalf("seq %d after rollback, want > %d", last, all[len(all)-1])
	}
	mustTx(t, s, func(tx store.Tx) error { return tx.DeleteMachine(ctx, "c") })
	next := appendEvents(t, s, "a", 1)[0]
	if next <= last {
		t.Errorf("seq %d after deleting the machine holding seq %d: seqs were reused", next, last)
	}
}

func testListEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("a"), minimal("b"))
	var sa, sb, both []int64
	for range 4 {
		x := appendEvents(t, s, "a", 1)
		y := appendEvents(t, s, "b", 1)
		sa, sb, both = append(sa, x...), append(sb, y...), append(both, x[0], y[0])
	}
	for _, tc := range []struct {
		name    string
		machine string
		after   int64
		limit   int
		want    []int64
	}{
		{"one machine", "a", 0, 0, sa},
		{"all machines", "", 0, 0, both},
		{"after", "a", sa[1], 0, sa[2:]},
		{"after, all machines", "", sb[1], 0, both[4:]},
		{"limit", "b", 0, 2, sb[:2]},
		{"after and limit", "b", sb[0], 2, sb[1:3]},
		{"limit, all machines", "", sa[1], 3, both[3:6]},
		{"after the last", "a", sa[3], 0, nil},
		{"unknown machine", "zzz", 0, 0, nil},
	} {
		mustView(t, s, func(tx store.Tx) error {
			evs, err := tx.ListEvents(ctx, tc.machine, tc.after, tc.limit)
			if got := seqs(evs); !slices.Equal(got, tc.want) {
				t.Errorf("%s: seqs %v, want %v", tc.name, got, tc.want)
			}
			for _, e := range evs {
				if tc.machine != "" && e.GetMachineId() != tc.machine {
					t.Errorf("%s: event of machine %q", tc.name, e.GetMachineId())
				}
			}
			return err
		})
	}
}

func testLastEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("a"), minimal("b"))
	sa := appendEvents(t, s, "a", 5)
	appendEvents(t, s, "b", 3)
	rev := slices.Clone(sa)
	slices.Reverse(rev)
	for _, tc := range []struct {
		name    string
		machine string
		limit   int
		want    []int64
	}{
		{"limit", "a", 2, rev[:2]},
		{"limit beyond count", "a", 10, rev},
		{"no limit", "a", 0, rev},
		{"unknown machine", "zzz", 3, nil},
	} {
		mustView(t, s, func(tx store.Tx) error {
			evs, err := tx.LastEvents(ctx, tc.machine, tc.limit)
			if got := seqs(evs); !slices.Equal(got, tc.want) {
				t.Errorf("%s: seqs %v, want %v", tc.name, got, tc.want)
			}
			return err
		})
	}
}

func testTrimEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("a"), minimal("b"))
	sa := appendEvents(t, s, "a", 10)
	sb := appendEvents(t, s, "b", 4)
	list := func(id string) []int64 {
		var out []int64
		mustView(t, s, func(tx store.Tx) error {
			evs, err := tx.ListEvents(ctx, id, 0, 0)
			out = seqs(evs)
			return err
		})
		return out
	}
	trim := func(id string, keep int) {
		mustTx(t, s, func(tx store.Tx) error { return tx.TrimEvents(ctx, id, keep) })
	}
	trim("a", 20) // fewer than keep: nothing happens
	if got := list("a"); !slices.Equal(got, sa) {
		t.Errorf("after trim to 20: %v, want %v", got, sa)
	}
	trim("a", 10) // exactly keep
	if got := list("a"); !slices.Equal(got, sa) {
		t.Errorf("after trim to 10: %v, want %v", got, sa)
	}
	trim("a", 3)
	if got := list("a"); !slices.Equal(got, sa[7:]) {
		t.Errorf("after trim to 3: %v, want %v", got, sa[7:])
	}
	if got := list("b"); !slices.Equal(got, sb) {
		t.Errorf("trimming a touched b: %v, want %v", got, sb)
	}
	more := appendEvents(t, s, "a", 2)
	trim("a", 3)
	want := append(sa[9:], more...)
	if got := list("a"); !slices.Equal(got, want) {
		t.Errorf("after appending and trimming again: %v, want %v", got, want)
	}
	trim("a", 0)
	if got := list("a"); len(got) != 0 {
		t.Errorf("after trim to 0: %v, want none", got)
	}
	trim("unknown", 1)
	if got := list("b"); !slices.Equal(got, sb) {
		t.Errorf("b at the end: %v, want %v", got, sb)
	}
}

// --- instructions ---

func testInstructions(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, minimal("m1"), minimal("m2"))
	install := &anvilv1.Instruction{Id: "i-install", Kind: &anvilv1.Instruction_Install{Install: &anvilv1.Install{
		ImageId: "debian-12", Url: "http://c/img", Checksum: "sha256:00ff", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
		TargetDisk: "/dev/sda", Hostname: "web-1", SshPublicKeys: []string{"k1", "k2"}, UserData: "#cloud-config",
	}}}
	ins := []*store.Instruction{
		// Created out of order: pending comes oldest first.
		{ID: "i-install", MachineID: "m1", Instruction: install, CreatedAt: ts(3)},
		{ID: "i-wipe", MachineID: "m1", Instruction: &anvilv1.Instruction{Id: "i-wipe", Kind: &anvilv1.Instruction_Wipe{Wipe: &anvilv1.Wipe{Mode: anvilv1.EraseMode_ERASE_MODE_QUICK, Disks: []string{"/dev/sda"}}}}, CreatedAt: ts(1)},
		{ID: "i-reboot", MachineID: "m1", Instruction: &anvilv1.Instruction{Id: "i-reboot", Kind: &anvilv1.Instruction_Reboot{Reboot: &anvilv1.Reboot{}}}, CreatedAt: ts(2)},
		{ID: "i-other", MachineID: "m2", Instruction: &anvilv1.Instruction{Id: "i-other"}, CreatedAt: ts(0)},
	}
	mustTx(t, s, func(tx store.Tx) error {
		for _, in := range ins {
			if err := tx.CreateInstruction(ctx, in); err != nil {
				return err
			}
		}
		return nil
	})
	err := s.Tx(ctx, func(tx store.Tx) error {
		return tx.CreateInstruction(ctx, &store.Instruction{ID: "i-wipe", MachineID: "m2", Instruction: &anvilv1.Instruction{Id: "i-wipe"}})
	})
	wantIs(t, "duplicate instruction", err, store.ErrAlreadyExists)

	checkInstr := func(what string, want, got *store.Instruction) {
		t.Helper()
		if got.ID != want.ID || got.MachineID != want.MachineID || !proto.Equal(got.Instruction, want.Instruction) ||
			!got.CreatedAt.Equal(want.CreatedAt) || !got.AckedAt.Equal(want.AckedAt) || !got.CancelledAt.Equal(want.CancelledAt) {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
	}
	pending := func(id string) []string {
		var out []string
		mustView(t, s, func(tx store.Tx) error {
			p, err := tx.PendingInstructions(ctx, id)
			for _, in := range p {
				out = append(out, in.ID)
			}
			return err
		})
		return out
	}
	mustView(t, s, func(tx store.Tx) error {
		got, err := tx.GetInstruction(ctx, "i-install")
		if err != nil {
			return err
		}
		checkInstr("GetInstruction", ins[0], got)
		if !got.AckedAt.IsZero() || !got.CancelledAt.IsZero() {
			t.Errorf("new instruction acked %v cancelled %v, want zero", got.AckedAt, got.CancelledAt)
		}
		p, err := tx.PendingInstructions(ctx, "m1")
		if err != nil {
			return err
		}
		if len(p) == 3 {
			checkInstr("pending[2]", ins[0], p[2])
		}
		return nil
	})
	if got, want := pending("m1"), []string{"i-wipe", "i-reboot", "i-install"}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}

	// Ack: true the first time, false after; AckedAt stays the first.
	for i, want := range []bool{true, false} {
		var acked bool
		mustTx(t, s, func(tx store.Tx) (err error) {
			acked, err = tx.AckInstruction(ctx, "i-wipe", ts(10+i))
			return err
		})
		if acked != want {
			t.Errorf("ack #%d = %v, want %v", i+1, acked, want)
		}
	}
	mustView(t, s, func(tx store.Tx) error {
		got, err := tx.GetInstruction(ctx, "i-wipe")
		if err == nil && !got.AckedAt.Equal(ts(10)) {
			t.Errorf("AckedAt = %v, want %v", got.AckedAt, ts(10))
		}
		return err
	})
	if got, want := pending("m1"), []string{"i-reboot", "i-install"}; !slices.Equal(got, want) {
		t.Errorf("pending after ack = %v, want %v", got, want)
	}

	// A rolled-back ack is not an ack.
	_ = s.Tx(ctx, func(tx store.Tx) error {
		if _, err := tx.AckInstruction(ctx, "i-reboot", ts(20)); err != nil {
			return err
		}
		return errors.New("rollback")
	})
	if got, want := pending("m1"), []string{"i-reboot", "i-install"}; !slices.Equal(got, want) {
		t.Errorf("pending after rolled-back ack = %v, want %v", got, want)
	}

	// Cancel every instruction of m1 not cancelled yet, the acked one
	// included (reports on it are then refused); m2's stay as they are.
	mustTx(t, s, func(tx store.Tx) error { return tx.CancelPending(ctx, "m1", ts(30)) })
	if got := pending("m1"); len(got) != 0 {
		t.Errorf("pending after cancel = %v, want none", got)
	}
	if got, want := pending("m2"), []string{"i-other"}; !slices.Equal(got, want) {
		t.Errorf("pending of m2 = %v, want %v", got, want)
	}
	mustView(t, s, func(tx store.Tx) error {
		for _, tc := range []struct {
			id               string
			acked, cancelled time.Time
		}{{"i-wipe", ts(10), ts(30)}, {"i-reboot", time.Time{}, ts(30)}, {"i-install", time.Time{}, ts(30)}, {"i-other", time.Time{}, time.Time{}}} {
			got, err := tx.GetInstruction(ctx, tc.id)
			if err != nil {
				return err
			}
			if !got.AckedAt.Equal(tc.acked) || !got.CancelledAt.Equal(tc.cancelled) {
				t.Errorf("%s: acked %v cancelled %v, want %v %v", tc.id, got.AckedAt, got.CancelledAt, tc.acked, tc.cancelled)
			}
		}
		return nil
	})
	// Cancelling again keeps the first CancelledAt; an instruction queued
	// after the first cancel is cancelled by the second.
	mustTx(t, s, func(tx store.Tx) error {
		return tx.CreateInstruction(ctx, &store.Instruction{ID: "i-late", MachineID: "m1", Instruction: &anvilv1.Instruction{Id: "i-late"}, CreatedAt: ts(35)})
	})
	if got, want := pending("m1"), []string{"i-late"}; !slices.Equal(got, want) {
		t.Errorf("pending after queueing again = %v, want %v", got, want)
	}
	mustTx(t, s, func(tx store.Tx) error { return tx.CancelPending(ctx, "m1", ts(40)) })
	mustView(t, s, func(tx store.Tx) error {
		for id, want := range map[string]time.Time{"i-reboot": ts(30), "i-wipe": ts(30), "i-late": ts(40)} {
			got, err := tx.GetInstruction(ctx, id)
			if err != nil {
				return err
			}
			if !got.CancelledAt.Equal(want) {
				t.Errorf("%s: CancelledAt after second cancel = %v, want %v", id, got.CancelledAt, want)
			}
		}
		return nil
	})
}

// --- images and sizes ---

func testImages(t *testing.T, s store.Store) {
	ctx := t.Context()
	b := &anvilv1.Image{
		Id: "b-debian", Url: "http://x/debian.raw.zst", Checksum: "sha256:abcd", Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
		Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE, anvilv1.ImageFeature_IMAGE_FEATURE_FIREWALL},
		Os:       "debian", Version: "12", Description: "Debian 12", CreatedAt: timestamppb.New(ts(1)),
	}
	a := &anvilv1.Image{Id: "a-tiny"}
	mustTx(t, s, func(tx store.Tx) error {
		if err := tx.CreateImage(ctx, b); err != nil {
			return err
		}
		return tx.CreateImage(ctx, a)
	})
	err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateImage(ctx, &anvilv1.Image{Id: "a-tiny", Url: "other"}) })
	wantIs(t, "duplicate image", err, store.ErrAlreadyExists)
	mustView(t, s, func(tx store.Tx) error {
		got, err := tx.GetImage(ctx, "b-debian")
		if err != nil {
			return err
		}
		if !proto.Equal(got, b) {
			t.Errorf("GetImage = %v, want %v", got, b)
		}
		all, err := tx.ListImages(ctx)
		if err != nil {
			return err
		}
		if len(all) != 2 || !proto.Equal(all[0], a) || !proto.Equal(all[1], b) {
			t.Errorf("ListImages = %v, want [%v %v]", all, a, b)
		}
		return nil
	})
	mustTx(t, s, func(tx store.Tx) error { return tx.DeleteImage(ctx, "a-tiny") })
	err = s.Tx(ctx, func(tx store.Tx) error { return tx.DeleteImage(ctx, "a-tiny") })
	wantIs(t, "delete deleted image", err, store.ErrNotFound)
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.ListImages(ctx)
		if len(all) != 1 || all[0].GetId() != "b-debian" {
			t.Errorf("ListImages after delete = %v", all)
		}
		return err
	})
}

func testSizes(t *testing.T, s store.Store) {
	ctx := t.Context()
	large := &anvilv1.Size{Id: "large", Description: "big boxes", Constraints: []*anvilv1.Constraint{
		{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 32, Max: 128},
		{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU, Min: 1, Max: 1, ModelGlob: "L4*"},
	}}
	small := &anvilv1.Size{Id: "small"}
	mustTx(t, s, func(tx store.Tx) error {
		if err := tx.CreateSize(ctx, small); err != nil {
			return err
		}
		return tx.CreateSize(ctx, large)
	})
	err := s.Tx(ctx, func(tx store.Tx) error { return tx.CreateSize(ctx, &anvilv1.Size{Id: "small"}) })
	wantIs(t, "duplicate size", err, store.ErrAlreadyExists)
	mustView(t, s, func(tx store.Tx) error {
		got, err := tx.GetSize(ctx, "large")
		if err != nil {
			return err
		}
		if !proto.Equal(got, large) {
			t.Errorf("GetSize = %v, want %v", got, large)
		}
		all, err := tx.ListSizes(ctx)
		if err != nil {
			return err
		}
		if len(all) != 2 || !proto.Equal(all[0], large) || !proto.Equal(all[1], small) {
			t.Errorf("ListSizes = %v, want [%v %v]", all, large, small)
		}
		return nil
	})
	mustTx(t, s, func(tx store.Tx) error { return tx.DeleteSize(ctx, "large") })
	err = s.Tx(ctx, func(tx store.Tx) error { return tx.DeleteSize(ctx, "large") })
	wantIs(t, "delete deleted size", err, store.ErrNotFound)
}

// --- concurrency ---

// testConcurrentWriters starts writers and readers at once, each doing what
// an agent registration does. Every transaction must succeed: the store
// serializes writers itself (no SQLITE_BUSY or serialization failures).
func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, rounds, readers = 20, 5, 4
	ctx := t.Context()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		allSeqs []int64
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	start := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id := fmt.Sprintf("m%02d", w)
			for r := range rounds {
				var seqs []int64
				err := s.Tx(ctx, func(tx store.Tx) error {
					seqs = seqs[:0]
					m, err := tx.GetMachineByUUID(ctx, "uuid-"+id)
					switch {
					case errors.Is(err, store.ErrNotFound):
						m = minimal(id)
						m.CreatedAt = ts(r)
						err = tx.CreateMachine(ctx, m)
					case err == nil:
						m.LastSeen = ts(r)
						err = tx.UpdateMachine(ctx, m)
					}
					if err != nil {
						return err
					}
					for range 2 {
						e := &anvilv1.Event{MachineId: id, Type: anvilv1.EventType_EVENT_TYPE_REGISTERING, Time: timestamppb.New(ts(r))}
						if err := tx.AppendEvent(ctx, e); err != nil {
							return err
						}
						seqs = append(seqs, e.Seq)
					}
					return tx.TrimEvents(ctx, id, 100)
				})
				if err != nil {
					fail(fmt.Errorf("writer %d round %d: %w", w, r, err))
					return
				}
				mu.Lock()
				allSeqs = append(allSeqs, seqs...)
				mu.Unlock()
			}
		}()
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range rounds * 4 {
				err := s.View(ctx, func(tx store.Tx) error {
					if _, err := tx.ListMachines(ctx, store.MachineFilter{}); err != nil {
						return err
					}
					_, err := tx.ListEvents(ctx, "", 0, 50)
					return err
				})
				if err != nil {
					fail(fmt.Errorf("reader %d: %w", r, err))
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	slices.Sort(allSeqs)
	if n := len(slices.Compact(slices.Clone(allSeqs))); n != len(allSeqs) {
		t.Errorf("%d of %d seqs handed out twice", len(allSeqs)-n, len(allSeqs))
	}
	mustView(t, s, func(tx store.Tx) error {
		ms, err := tx.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			return err
		}
		if len(ms) != writers {
			t.Errorf("%d machines, want %d", len(ms), writers)
		}
		evs, err := tx.ListEvents(ctx, "", 0, 0)
		if err != nil {
			return err
		}
		if got := seqs(evs); !slices.Equal(got, allSeqs) {
			t.Errorf("stored seqs %v, want the committed %v", got, allSeqs)
		}
		return nil
	})
}
