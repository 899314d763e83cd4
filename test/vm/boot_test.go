// Package vm boots the real agent initramfs on Debian's cloud kernel in a
// QEMU virtual machine (user networking only; disks on sparse files) against
// a real controller on the host's loopback, and checks what the machine
// reports. The kernel comes from hack/fetch-kernel.sh and the initramfs
// from `make initramfs`; `make test` provides both.
package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/app"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
	"github.com/anvil-metal/anvil/test/labkit/qemu"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// guestHost is the address QEMU's user networking gives the host's
// loopback inside the guest.
const guestHost = "10.0.2.2"

// artifacts finds the kernel and the initramfs (make test builds both).
func artifacts(t *testing.T) (kernel, initrd string) {
	t.Helper()
	cache := os.Getenv("ANVIL_CACHE")
	if cache == "" {
		cache = "/var/cache/anvil"
	}
	kernel = filepath.Join(cache, "kernel", "vmlinuz")
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("no kernel at %s (hack/fetch-kernel.sh; make test fetches it): %v", kernel, err)
	}
	initrd = os.Getenv("ANVIL_INITRAMFS")
	if initrd == "" {
		root, err := filepath.Abs("../..")
		if err != nil {
			t.Fatal(err)
		}
		initrd = filepath.Join(root, "bin", "anvil-initramfs.cpio.zst")
	}
	if _, err := os.Stat(initrd); err != nil {
		t.Fatalf("no initramfs at %s (make initramfs; make test builds it): %v", initrd, err)
	}
	return kernel, initrd
}

func TestBootRegistersReady(t *testing.T) {
	kernel, initrd := artifacts(t)

	h := harness.StartController(t, t.TempDir(), func(c *app.Config) {
		// The guest dials the host as 10.0.2.2; the serving certificate
		// must name it (the agent pins the CA and checks the host).
		c.Hosts = []string{guestHost}
	})
	_, port, err := net.SplitHostPort(h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ctl := h.Running()

	uuid := harness.UUID(t.Name(), 0)
	s := sha256.Sum256([]byte(uuid))
	mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", s[0], s[1], s[2])
	vdSerial, nvSerial := "ANVIL-VD-"+uuid[:8], "ANVIL-NV-"+uuid[:8]

	dir := t.TempDir()
	vd, nv := loopdev.SparseFile(t, 256<<20), loopdev.SparseFile(t, 512<<20)
	accel, err := qemu.ChooseAccel(context.Background(), "", kernel)
	if err != nil {
		t.Fatal(err)
	}
	v := qemu.StartT(t, qemu.Options{
		Name: "boot-test", Accel: accel, MemoryMiB: 1024, CPUs: 2,
		Console: filepath.Join(dir, "console.log"), NoReboot: true,
		// A flat RTC far in the past: the agent must step the clock
		// from the controller's certificate before TLS can work.
		RTC:    "2001-01-01T00:00:00",
		Kernel: kernel, Initrd: initrd,
		Append: strings.Join([]string{
			"console=ttyS0", "panic=-1",
			"anvil.controller=" + guestHost + ":" + port,
			"anvil.token=" + ctl.BootToken,
			"anvil.ca_fp=" + ctl.CAFingerprint,
		}, " "),
		Devices: []qemu.Device{
			qemu.RNG{},
			qemu.NIC{Net: qemu.User{}, MAC: mac},
			qemu.SMBIOS{Manufacturer: "anvil", Product: "lab-vm", Serial: "LAB-" + uuid[:8], UUID: uuid},
			qemu.Disk{ID: "vd0", File: vd, Serial: vdSerial},
			qemu.Disk{ID: "nv0", File: nv, Serial: nvSerial, NVMe: true},
		},
	})

	op := h.Operator()
	var m *anvilv1.Machine
	deadline := time.After(100 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for m == nil {
		select {
		case <-v.Exited():
			t.Fatalf("QEMU exited before the machine was Ready: %v %s", v.Err(), v.Output())
		case <-deadline:
			t.Fatalf("machine %s not Ready within 100 s", uuid)
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: uuid})
		cancel()
		if err == nil && got.GetState() == anvilv1.MachineState_MACHINE_STATE_READY {
			m = got
		}
	}
	ready := time.Since(v.Started)

	if got := m.GetInventory().GetProduct().GetUuid(); got != uuid {
		t.Errorf("inventory UUID %q, want the SMBIOS UUID %q", got, uuid)
	}
	var serials []string
	for _, d := range m.GetInventory().GetDisks() {
		serials = append(serials, d.GetSerial())
	}
	for _, want := range []string{vdSerial, nvSerial} {
		if !slices.Contains(serials, want) {
			t.Errorf("disk serial %s missing from the inventory (serials %q)", want, serials)
		}
	}
	var macs []string
	for _, n := range m.GetInventory().GetNics() {
		macs = append(macs, n.GetMac())
	}
	if !slices.Contains(macs, mac) || !slices.Contains(m.GetMacs(), mac) {
		t.Errorf("NIC MAC %s missing: inventory %q, machine %q", mac, macs, m.GetMacs())
	}

	console := v.ConsoleText()
	for _, want := range []string{"modules loaded", "network configured", "stepped forward", "registered"} {
		if !strings.Contains(console, want) {
			t.Errorf("console has no %q", want)
		}
	}
	t.Logf("Ready %.1f s after QEMU started; %s", ready.Seconds(), bootTimings(console))
}

// bootTimings summarises the console: kernel time at /init, and the
// agent's own elapsed times.
func bootTimings(console string) string {
	var parts []string
	if m := regexp.MustCompile(`\[\s*([0-9.]+)\] Run /init`).FindStringSubmatch(console); m != nil {
		parts = append(parts, "kernel ran /init at "+m[1]+" s")
	}
	for _, step := range []string{"modules loaded", "block devices settled", "boot environment ready"} {
		re := regexp.MustCompile(`msg="` + step + `".*elapsed=([0-9.]+m?s)`)
		if m := re.FindStringSubmatch(console); m != nil {
			parts = append(parts, step+" "+m[1])
		}
	}
	if m := regexp.MustCompile(`msg="network configured".*took=([0-9.]+m?s)`).FindStringSubmatch(console); m != nil {
		parts = append(parts, "DHCP "+m[1])
	}
	return strings.Join(parts, ", ")
}

// TestBootTimingsParse keeps bootTimings honest about the console format.
func TestBootTimingsParse(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("[    2.707305] Run /init as init process\n")
	b.WriteString(`time=2001-01-01T00:00:04.029Z level=INFO msg="modules loaded" phase=boot modules=14 already_loaded=[] elapsed=459ms` + "\n")
	b.WriteString(`time=2001-01-01T00:00:05.118Z level=INFO msg="network configured" phase=boot interface=eth0 took=459ms` + "\n")
	got := bootTimings(b.String())
	for _, want := range []string{"/init at 2.707305 s", "modules loaded 459ms", "DHCP 459ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("bootTimings = %q, want %q in it", got, want)
		}
	}
}
