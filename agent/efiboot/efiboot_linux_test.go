package efiboot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	efi "github.com/canonical/go-efilib"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/test/loopdev"
)

// memVars is a firmware's variable store in memory (go-efilib's backend
// interface): what efivarfs shows on a real machine. refuse makes writes
// of that variable fail; drop makes them succeed and keep nothing.
type memVars struct {
	mu     sync.Mutex
	vars   map[string][]byte
	attrs  map[string]efi.VariableAttributes
	refuse string
	drop   string
}

func newMemVars() *memVars {
	return &memVars{vars: map[string][]byte{}, attrs: map[string]efi.VariableAttributes{}}
}

func (m *memVars) Get(name string, guid efi.GUID) (efi.VariableAttributes, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.vars[name]
	if !ok || guid != efi.GlobalVariable {
		return 0, nil, efi.ErrVarNotExist
	}
	return m.attrs[name], append([]byte(nil), b...), nil
}

func (m *memVars) Set(name string, guid efi.GUID, attrs efi.VariableAttributes, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == m.refuse {
		return errors.New("write protected")
	}
	if name == m.drop {
		return nil
	}
	if len(data) == 0 {
		delete(m.vars, name)
		return nil
	}
	m.vars[name], m.attrs[name] = append([]byte(nil), data...), attrs
	return nil
}

func (m *memVars) List() ([]efi.VariableDescriptor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []efi.VariableDescriptor
	for n := range m.vars {
		out = append(out, efi.VariableDescriptor{Name: n, GUID: efi.GlobalVariable})
	}
	return out, nil
}

func (m *memVars) put(t *testing.T, name string, v any) {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case *efi.LoadOption:
		var err error
		if b, err = v.Bytes(); err != nil {
			t.Fatal(err)
		}
	case []uint16:
		for _, n := range v {
			b = binary.LittleEndian.AppendUint16(b, n)
		}
	}
	m.vars[name] = b
	m.attrs[name] = efi.AttributeNonVolatile | efi.AttributeBootserviceAccess | efi.AttributeRuntimeAccess
}

// gptDisk is a disk image with an ESP as partition 1.
func gptDisk(t *testing.T) (string, string) {
	t.Helper()
	p := loopdev.SparseFile(t, 256<<20)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	guid := "5f1c8a3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
	tab := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 2048 + 128*2048 - 1, Type: gpt.EFISystemPartition, Name: "ESP", GUID: guid},
	}}
	if err := tab.Write(f, 256<<20); err != nil {
		t.Fatal(err)
	}
	return p, guid
}

func TestEnsure(t *testing.T) {
	target, guid := gptDisk(t)
	m := newMemVars()
	m.put(t, "Boot0000", app())
	m.put(t, "Boot0001", disk("UEFI QEMU NVMe Ctrl", 0x11))
	m.put(t, "Boot0003", pxe(1))
	m.put(t, "Boot0004", disk("anvil: stale", 0x77))
	m.put(t, "BootOrder", []uint16{0, 1, 4, 3})
	m.put(t, "BootCurrent", []uint16{3})
	ctx := context.Background()

	report, err := Ensure(ctx, target, 1, "EFI/BOOT/BOOTX64.EFI", "anvil: tiny on vda", WithVarsBackend(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`created Boot0002 "anvil: tiny on vda" (HD(1,GPT,` + guid, `deleted stale Boot0004 "anvil: stale"`,
		"BootOrder 0000,0001,0004,0003 -> 0003,0002,0000,0001", `network entry Boot0003 "UEFI PXEv4" first`} {
		if !strings.Contains(strings.ToLower(report), strings.ToLower(want)) {
			t.Errorf("report %q lacks %q", report, want)
		}
	}
	vctx := context.WithValue(ctx, efi.VarsBackendKey{}, m)
	o, err := efi.ReadLoadOptionVariable(vctx, efi.LoadOptionClassBoot, 2)
	if err != nil {
		t.Fatal(err)
	}
	hd, ok := o.FilePath[0].(*efi.HardDriveDevicePathNode)
	if !ok || hd.PartitionNumber != 1 || hd.PartitionStart != 2048 || hd.PartitionSize != 128*2048 || hd.MBRType != efi.GPT ||
		!strings.EqualFold(hd.Signature.String(), guid) || PathString(o.FilePath[1:]) != `\EFI\BOOT\BOOTX64.EFI` || !o.IsActive() {
		t.Errorf("Boot0002 is %s", o)
	}
	if _, ok := m.vars["Boot0004"]; ok {
		t.Error("the stale entry is still there")
	}

	// Again: nothing to change, and said so.
	report, err = Ensure(ctx, target, 1, "EFI/BOOT/BOOTX64.EFI", "anvil: tiny on vda", WithVarsBackend(m))
	if err != nil || !strings.Contains(report, "kept Boot0002") || !strings.Contains(report, "BootOrder 0003,0002,0000,0001 kept") {
		t.Errorf("second run: %v %q", err, report)
	}
}

// TestEnsureFirmwareThatRefuses: a firmware that refuses BootOrder, or
// accepts it and keeps nothing, is an error naming the variable.
func TestEnsureFirmwareThatRefuses(t *testing.T) {
	target, _ := gptDisk(t)
	for _, c := range []struct{ refuse, drop, want string }{
		{refuse: "BootOrder", want: "write BootOrder"},
		{drop: "BootOrder", want: "did not keep BootOrder"},
		{refuse: "Boot0001", want: "write Boot0001"},
		{drop: "Boot0001", want: "did not keep Boot0001"},
	} {
		t.Run(fmt.Sprintf("refuse %q drop %q", c.refuse, c.drop), func(t *testing.T) {
			m := newMemVars()
			m.put(t, "Boot0000", pxe(1))
			m.put(t, "BootOrder", []uint16{0})
			m.refuse, m.drop = c.refuse, c.drop
			_, err := Ensure(context.Background(), target, 1, "EFI/BOOT/BOOTX64.EFI", "anvil: x", WithVarsBackend(m))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

// TestEnsureKeepsEntriesItCannotRead: BootOrder often names numbers with
// no variable (a removed device) or one go-efilib cannot decode; they stay
// where they are, and the disk's entry still goes in.
func TestEnsureKeepsEntriesItCannotRead(t *testing.T) {
	target, _ := gptDisk(t)
	m := newMemVars()
	m.put(t, "Boot0003", pxe(1))
	m.vars["Boot0005"] = []byte{1, 2, 3} // not a load option
	m.put(t, "BootOrder", []uint16{9, 5, 3})
	m.put(t, "BootCurrent", []uint16{3})
	report, err := Ensure(context.Background(), target, 1, "EFI/BOOT/BOOTX64.EFI", "anvil: x", WithVarsBackend(m))
	if err != nil {
		t.Fatalf("%v (%s)", err, report)
	}
	if !strings.Contains(report, "BootOrder 0009,0005,0003 -> 0003,0000,0009,0005") {
		t.Errorf("report %q", report)
	}
	if got := m.vars["BootOrder"]; len(got) != 8 || got[0] != 3 || got[2] != 0 || got[4] != 9 || got[6] != 5 {
		t.Errorf("BootOrder bytes % x", got)
	}
}

func TestEnsureBadTarget(t *testing.T) {
	m := newMemVars()
	if _, err := Ensure(context.Background(), loopdev.SparseFile(t, 1<<20), 1, "x.efi", "anvil: x", WithVarsBackend(m)); err == nil {
		t.Error("a disk without a GPT was accepted")
	}
	if len(m.vars) != 0 {
		t.Errorf("variables written for a bad target: %v", m.vars)
	}
}
