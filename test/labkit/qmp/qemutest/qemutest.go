// Package qemutest starts real QEMU VMs (qemu-system-x86_64, TCG, SeaBIOS,
// built by test/labkit/qemu) for tests of the lab's QMP BMC driver
// (package qmp): a VM with a QMP socket and the flags of qmp.QEMUArgs,
// optionally a virtio NIC (user networking with restrict=on: nothing leaves
// the QEMU process) and a blank virtio disk, and SeaBIOS's debug console
// (I/O port 0x402) written to a file, so that tests can read which boot
// order the firmware saw and which device it booted. No kernel is needed: a VM with nothing bootable loops
// in SeaBIOS and iPXE.
package qemutest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/test/labkit/qemu"
)

// Options describe the VM.
type Options struct {
	// Running starts the VM running; otherwise it starts off (-S).
	Running bool
	// NIC adds virtio-net-pci with id "net0"; Disk adds a 16 MiB blank
	// virtio-blk-pci with id "disk0".
	NIC, Disk bool
	// PowerOffDisk writes a boot sector to the disk that powers the VM off
	// at once (ACPI S5: SLP_EN written to PM1a_CNT at 0x604, the PM base
	// SeaBIOS programs), as a guest shutdown does; with -no-shutdown QEMU
	// then shows status "shutdown". Implies Disk.
	PowerOffDisk bool
	// BootIndexes gives the NIC bootindex=1 and the disk bootindex=2 on the
	// command line; without it the devices start outside the boot order.
	BootIndexes bool
}

// VM is a running QEMU process, killed when the test ends.
type VM struct {
	// Socket is the QMP socket (qmp.New's).
	Socket string
	// DebugLog is the file SeaBIOS's debug output goes to.
	DebugLog string
	proc     *qemu.VM
}

// Stderr is what QEMU itself printed.
func (vm *VM) Stderr() string { return vm.proc.Output() }

// Start boots a VM (package qemu builds its command line). It fails the
// test when qemu-system-x86_64 is missing (hack/install-deps.sh installs
// qemu-system-x86).
func Start(t testing.TB, o Options) *VM {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "anvil-qmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vm := &VM{Socket: filepath.Join(dir, "vm.qmp"), DebugLog: filepath.Join(dir, "seabios.log")}
	bootindex := func(n int) int {
		if o.BootIndexes {
			return n
		}
		return 0
	}
	devs := []qemu.Device{qemu.DebugCon{File: vm.DebugLog}, qemu.QMP{Socket: vm.Socket, StartOff: !o.Running}}
	if o.NIC {
		devs = append(devs, qemu.NIC{ID: "net0", Net: qemu.User{Restrict: true}, BootIndex: bootindex(1)})
	}
	if o.Disk || o.PowerOffDisk {
		img := filepath.Join(dir, "disk.img")
		var mbr []byte
		if o.PowerOffDisk {
			mbr = powerOffMBR()
		}
		if err := os.WriteFile(img, mbr, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 16<<20); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, qemu.Disk{ID: "disk0", File: img, BootIndex: bootindex(2)})
	}
	v, err := qemu.Start(qemu.Options{Name: "bmc-test", MemoryMiB: 64, Console: filepath.Join(dir, "console.log"), Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	vm.proc = v
	t.Cleanup(v.Kill)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-v.Exited():
			t.Fatalf("QEMU exited before its QMP socket was up: %v\n%s", v.Err(), v.Output())
		default:
		}
		if c, err := net.DialTimeout("unix", vm.Socket, time.Second); err == nil {
			c.Close() // QEMU accepts the next client once this one is gone
			return vm
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket %s not up after 15s\n%s", vm.Socket, v.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// powerOffMBR is a boot sector running: mov dx, 0x604; mov ax, 0x2000;
// out dx, ax; hlt; jmp $-3.
func powerOffMBR() []byte {
	b := make([]byte, 512)
	copy(b, []byte{0xba, 0x04, 0x06, 0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd})
	b[510], b[511] = 0x55, 0xaa
	return b
}

// Log returns SeaBIOS's debug output so far.
func (vm *VM) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(vm.DebugLog)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// WaitLog waits until SeaBIOS's output after offset contains want and
// returns that output.
func (vm *VM) WaitLog(ctx context.Context, t testing.TB, offset int, want string) string {
	t.Helper()
	for {
		if l := vm.Log(t); len(l) >= offset && strings.Contains(l[offset:], want) {
			return l[offset:]
		}
		select {
		case <-ctx.Done():
			l := vm.Log(t)
			t.Fatalf("SeaBIOS did not print %q: %v; output after byte %d:\n%s", want, ctx.Err(), offset, l[min(offset, len(l)):])
		case <-time.After(50 * time.Millisecond):
		}
	}
}
