package qmp_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/test/labkit/qmp"
	"github.com/anvil-metal/anvil/test/labkit/qmp/qemutest"
)

// These tests run a real QEMU (TCG, SeaBIOS, no kernel) and read SeaBIOS's
// debug console to see what the firmware did.

const banner = "SeaBIOS (version"

func open(t *testing.T, vm *qemutest.VM) bmc.Driver {
	t.Helper()
	return qmp.New(vm.Socket, 10*time.Second)
}

func status(t *testing.T, d bmc.Driver) bmc.Status {
	t.Helper()
	st, err := d.Status(t.Context())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func wantStatus(t *testing.T, d bmc.Driver, power bmc.PowerState, detail string) {
	t.Helper()
	if st := status(t, d); st.Power != power || st.Detail != detail {
		t.Fatalf("status %v (%q), want %v (%q)", st.Power, st.Detail, power, detail)
	}
}

// waitDetail polls until the QMP status is detail.
func waitDetail(t *testing.T, d bmc.Driver, detail string) bmc.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := status(t, d)
		if st.Detail == detail {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status still %q after 30s, want %q", st.Detail, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func logCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestQEMUPowerCycle(t *testing.T) {
	vm := qemutest.Start(t, qemutest.Options{Disk: true}) // starts off (-S)
	d := open(t, vm)
	ctx := t.Context()
	wantStatus(t, d, bmc.PowerOff, "prelaunch")
	if l := vm.Log(t); l != "" {
		t.Fatalf("the firmware ran while off:\n%s", l)
	}

	if err := d.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d, bmc.PowerOn, "running")
	vm.WaitLog(logCtx(t), t, 0, "No bootable device")

	// On again: left alone, no new boot.
	mark := len(vm.Log(t))
	if err := d.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d, bmc.PowerOn, "running")

	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d, bmc.PowerOff, "prelaunch")
	off := vm.Log(t)
	if strings.Contains(off[mark:], banner) {
		t.Fatalf("power on of a running VM rebooted it:\n%s", off[mark:])
	}
	time.Sleep(700 * time.Millisecond)
	if l := vm.Log(t); l != off {
		t.Fatalf("the firmware ran while off:\n%s", l[len(off):])
	}

	// Reset of an off machine powers it on with a cold boot.
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d, bmc.PowerOn, "running")
	vm.WaitLog(logCtx(t), t, len(off), banner)
	vm.WaitLog(logCtx(t), t, len(off), "No bootable device")

	// Reset of a running machine reboots it.
	mark = len(vm.Log(t))
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d, bmc.PowerOn, "running")
	vm.WaitLog(logCtx(t), t, mark, banner)

	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatalf("power off of an off VM: %v", err)
	}
	wantStatus(t, d, bmc.PowerOff, "prelaunch")
}

// TestQEMUGuestShutdown: a guest power-off under -no-shutdown leaves QEMU
// with status "shutdown", which is off, and PowerOn boots it again.
func TestQEMUGuestShutdown(t *testing.T) {
	vm := qemutest.Start(t, qemutest.Options{PowerOffDisk: true, Running: true})
	d := open(t, vm)
	if st := waitDetail(t, d, "shutdown"); st.Power != bmc.PowerOff {
		t.Fatalf("guest shutdown is %v, want off", st.Power)
	}
	mark := len(vm.Log(t))
	if err := d.PowerOn(t.Context()); err != nil {
		t.Fatalf("power on after a guest shutdown: %v", err)
	}
	vm.WaitLog(logCtx(t), t, mark, "Booting from Hard Disk")
	waitDetail(t, d, "shutdown")
	// Reset from the shutdown state works as well.
	mark = len(vm.Log(t))
	if err := d.Reset(t.Context()); err != nil {
		t.Fatalf("reset after a guest shutdown: %v", err)
	}
	vm.WaitLog(logCtx(t), t, mark, "Booting from Hard Disk")
}

var bootingFrom = regexp.MustCompile(`Booting from (Hard Disk|ROM)`)

// firstBoot returns what SeaBIOS booted first after mark: "Hard Disk" or
// "ROM" (the NIC's iPXE).
func firstBoot(t *testing.T, vm *qemutest.VM, mark int) string {
	t.Helper()
	l := vm.WaitLog(logCtx(t), t, mark, "Booting from ")
	ctx := logCtx(t)
	for {
		if m := bootingFrom.FindStringSubmatch(l); m != nil {
			return m[1]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no 'Booting from' line:\n%s", l)
		case <-time.After(50 * time.Millisecond):
		}
		l = vm.Log(t)[mark:]
	}
}

// TestQEMUNextBoot switches between network and disk boot and checks the
// order SeaBIOS read and the device it booted. With the disk first the
// disk's boot sector powers the VM off (status "shutdown"); with the NIC
// first SeaBIOS runs iPXE's ROM.
func TestQEMUNextBoot(t *testing.T) {
	for _, tc := range []struct {
		name        string
		bootIndexes bool
		initial     bmc.BootDevice
	}{
		{"indexes on the command line", true, bmc.BootPXE},
		{"no indexes on the command line", false, bmc.BootUnspecified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := qemutest.Start(t, qemutest.Options{NIC: true, PowerOffDisk: true, BootIndexes: tc.bootIndexes})
			d := open(t, vm)
			ctx := t.Context()
			if st := status(t, d); st.NextBoot != tc.initial {
				t.Fatalf("initial next boot %v, want %v", st.NextBoot, tc.initial)
			}
			for i, want := range []bmc.BootDevice{bmc.BootDisk, bmc.BootPXE, bmc.BootDisk, bmc.BootDisk} {
				if err := d.SetNextBoot(ctx, want); err != nil {
					t.Fatalf("step %d: set next boot %v: %v", i, want, err)
				}
				if st := status(t, d); st.NextBoot != want {
					t.Fatalf("step %d: next boot %v, want %v", i, st.NextBoot, want)
				}
				if err := d.PowerOff(ctx); err != nil {
					t.Fatal(err)
				}
				mark := len(vm.Log(t))
				if err := d.PowerOn(ctx); err != nil {
					t.Fatal(err)
				}
				vm.WaitLog(logCtx(t), t, mark, "boot order:\n")
				got := firstBoot(t, vm, mark)
				// SeaBIOS prints the whole order before it boots: read the
				// log again now (the wait above can return before the
				// order's entries are written).
				order := vm.Log(t)[mark:]
				order = order[strings.Index(order, "boot order:\n"):]
				wantFirst, wantOrder := "ROM", "1: /pci@i0cf8/ethernet@"
				if want == bmc.BootDisk {
					wantFirst, wantOrder = "Hard Disk", "1: /pci@i0cf8/scsi@"
				}
				if got != wantFirst || !strings.HasPrefix(order, "boot order:\n"+wantOrder) {
					t.Fatalf("step %d: next boot %v: SeaBIOS booted from %s, want %s; its order:\n%.200s", i, want, got, wantFirst, order)
				}
				if want == bmc.BootDisk {
					waitDetail(t, d, "shutdown") // the disk's boot sector ran
				}
			}
		})
	}
}

func TestQEMUNextBootNeedsTheDevice(t *testing.T) {
	vm := qemutest.Start(t, qemutest.Options{Disk: true})
	d := open(t, vm)
	err := d.SetNextBoot(t.Context(), bmc.BootPXE)
	if !errors.Is(err, bmc.ErrRefused) || !strings.Contains(err.Error(), "no NIC") {
		t.Fatalf("PXE boot without a NIC: %v, want ErrRefused naming the missing NIC", err)
	}
	if err := d.SetNextBoot(t.Context(), bmc.BootDisk); err != nil {
		t.Fatal(err)
	}
}

// TestQEMUBusySocket: QEMU serves one QMP client at a time; a second one
// gets no greeting and fails with ErrUnreachable after the timeout.
func TestQEMUBusySocket(t *testing.T) {
	vm := qemutest.Start(t, qemutest.Options{})
	first := open(t, vm)
	hold, err := holdConnection(vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	busy := qmp.New(vm.Socket, 500*time.Millisecond)
	if _, err := busy.Status(t.Context()); !errors.Is(err, bmc.ErrUnreachable) || !strings.Contains(err.Error(), "another QMP client") {
		t.Fatalf("status while another client holds the socket: %v", err)
	}
	hold.Close()
	wantStatus(t, first, bmc.PowerOff, "prelaunch")
}

func TestQEMUGone(t *testing.T) {
	d := qmp.New(t.TempDir()+"/none.qmp", 0)
	if err := d.PowerOn(t.Context()); !errors.Is(err, bmc.ErrUnreachable) {
		t.Fatalf("power on without QEMU: %v, want ErrUnreachable", err)
	}
}

// holdConnection connects to the QMP socket and waits for the greeting:
// QEMU then serves this client and no other.
func holdConnection(socket string) (net.Conn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
