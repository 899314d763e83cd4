package nvme

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// sysTree builds a sysfs tree below a temp dir: files maps paths to
// contents, dirs are created empty.
func sysTree(t *testing.T, files map[string]string, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// twoNamespaces is the layout of QEMU's nvme with two nvme-ns devices on
// a kernel without native multipath (the namespaces under the controller),
// beside a second, unrelated controller.
func twoNamespaces(t *testing.T) string {
	return sysTree(t, map[string]string{
		"sys/class/nvme/nvme0/nvme0n1/nsid": "1\n",
		"sys/class/nvme/nvme0/nvme0n2/nsid": "2\n",
		"sys/class/nvme/nvme1/nvme1n1/nsid": "1\n",
	}, "sys/class/nvme-subsystem/nvme-subsys0/nvme0", "sys/class/nvme-subsystem/nvme-subsys1/nvme1")
}

func TestSubsystemNamespaces(t *testing.T) {
	root := twoNamespaces(t)
	got, err := subsystemNamespaces(root, "nvme0n2")
	want := []Peer{{NSID: 1, Path: "/dev/nvme0n1"}, {NSID: 2, Path: "/dev/nvme0n2"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("plain: %v, %v; want %v", got, err, want)
	}
	// Native multipath: the namespace heads sit in the subsystem, the
	// controller holds hidden path devices (nvme0c0n1) that are no
	// namespaces of their own.
	mp := sysTree(t, map[string]string{
		"sys/class/nvme-subsystem/nvme-subsys0/nvme0n1/nsid": "1",
		"sys/class/nvme-subsystem/nvme-subsys0/nvme0n3/nsid": "5",
		"sys/class/nvme/nvme0/nvme0c0n1/nsid":                "1",
		"sys/class/nvme/nvme0/nvme0c0n3/nsid":                "5",
	}, "sys/class/nvme-subsystem/nvme-subsys0/nvme0")
	got, err = subsystemNamespaces(mp, "nvme0n1")
	want = []Peer{{NSID: 1, Path: "/dev/nvme0n1"}, {NSID: 5, Path: "/dev/nvme0n3"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("multipath: %v, %v; want %v", got, err, want)
	}
	if _, err := subsystemNamespaces(root, "nvme7n1"); err == nil {
		t.Error("a namespace in no subsystem was found")
	}
	bad := sysTree(t, map[string]string{"sys/class/nvme/nvme0/nvme0n1/nsid": "zero"}, "sys/class/nvme-subsystem/nvme-subsys0/nvme0")
	if _, err := subsystemNamespaces(bad, "nvme0n1"); err == nil {
		t.Error("a bad nsid attribute was accepted")
	}
}

// identifyingController answers Identify (controller, namespace, active
// namespace list) with fixed data and records the other commands.
type identifyingController struct {
	ctrl   []byte
	active []uint32
	got    []Command
}

func (f *identifyingController) Submit(cmd *Command, data []byte) (uint32, error) {
	f.got = append(f.got, *cmd)
	if cmd.Opcode != OpIdentify {
		return 0, nil
	}
	switch cmd.CDW10 & 0xff {
	case 0x01:
		copy(data, f.ctrl)
	case 0x00:
		copy(data, identifyNamespace(0, 9<<16))
	case 0x02:
		for i, id := range f.active {
			if id > cmd.NSID {
				binary.LittleEndian.PutUint32(data[4*i:], id)
			}
		}
	}
	return 0, nil
}

// TestPlanLooksAtEveryNamespace is the bug: erasing nvme0n1 of a controller
// whose format reaches every namespace (FNA bit 0), or that sanitizes,
// destroyed nvme0n2. Device.Plan chose the controller-wide command from
// the target's controller alone.
func TestPlanLooksAtEveryNamespace(t *testing.T) {
	root := twoNamespaces(t)
	for _, c := range []struct {
		name      string
		ctrl      []byte
		method    string
		scope     Scope
		wantError error
	}{
		{"FNA bit 0: a format of nsid 1 formats nsid 2", identifyController(0x0002, 0, 0x01), "", 0, ErrWouldEraseOthers},
		{"sanitize and FNA 0: per-namespace crypto format", identifyController(0x0002, 0x3, 0x04), "nvme-format-crypto", ScopeNamespace, nil},
		{"QEMU 7.2 (OACS 0x010a, FNA 0, SANICAP 0)", identifyController(0x010a, 0, 0), "nvme-format-user-data", ScopeNamespace, nil},
	} {
		f := &identifyingController{ctrl: c.ctrl, active: []uint32{1, 2}}
		d := &Device{S: f, NSID: 1, Name: "nvme0n1", SysRoot: root}
		p, err := d.Plan()
		if c.wantError != nil {
			if !errors.Is(err, c.wantError) {
				t.Errorf("%s: %+v, %v; want %v", c.name, p, err, c.wantError)
			}
			continue
		}
		if err != nil || p.Method != c.method || p.Scope != c.scope || p.Command.NSID != 1 {
			t.Errorf("%s: %+v, %v; want %s on nsid 1", c.name, p, err, c.method)
		}
	}
	// Both namespaces selected, neither protected: the sanitize may run.
	f := &identifyingController{ctrl: identifyController(0x0002, 0x1, 0), active: []uint32{1, 2}}
	d := &Device{S: f, NSID: 1, Name: "nvme0n1", SysRoot: root}
	p, err := d.PlanFor(func(string) (bool, bool, error) { return true, false, nil })
	if err != nil || p.Method != "nvme-sanitize-crypto" || p.Scope != ScopeSubsystem {
		t.Errorf("all selected: %+v, %v", p, err)
	}
	// An active namespace the kernel shows no block device for stops it.
	f.active = []uint32{1, 2, 3}
	if p, err := d.PlanFor(func(string) (bool, bool, error) { return true, false, nil }); err != nil || p.Scope != ScopeNamespace {
		t.Errorf("nsid 3 without a block device: %+v, %v; want a per-namespace format", p, err)
	}
	// The judge's error is the plan's error.
	boom := errors.New("boom")
	if _, err := d.PlanFor(func(string) (bool, bool, error) { return false, false, boom }); !errors.Is(err, boom) {
		t.Errorf("judge error: %v", err)
	}
}
