// Package lab is the end-to-end suite on the QEMU mini-lab (package
// labkit), as `make lab` runs it: VMs network-boot the real agent from the
// real controller's DHCP, TFTP and boot service inside a network namespace
// of the test's own, and are driven through the operator API.
package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/labkit"
)

// nextLab numbers the labs of this process (each has its own namespace).
var nextLab atomic.Int32

// suite is one lab shared by the tests, booted once.
type suite struct {
	lab *labkit.Lab
	op  *labkit.Operator
	ids []string
	dir string // images served under /images/
}

func root(t *testing.T) string {
	r, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startSuite(t *testing.T, machines int, edit func(*labkit.Config)) *suite {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespace, taps)")
	}
	r := root(t)
	cache := os.Getenv("ANVIL_CACHE")
	if cache == "" {
		cache = "/var/cache/anvil"
	}
	bin := t.TempDir()
	for c, pkg := range map[string]string{"anvil-controller": "./controller/cmd/anvil-controller", "anvilctl": "./controller/cmd/anvilctl",
		"anvil-lab-chassis": "./test/labkit/cmd/anvil-lab-chassis", "anvil-lab-redfish": "./test/labkit/cmd/anvil-lab-redfish"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, c), pkg)
		build.Dir = r
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	images := t.TempDir()
	c := labkit.Defaults(filepath.Join(t.TempDir(), "lab"))
	c.Namespace = fmt.Sprintf("anvil-e2e-%d-%d", os.Getpid(), nextLab.Add(1))
	c.Machines = machines
	c.Bin = bin
	c.Kernel = filepath.Join(cache, "kernel", "vmlinuz")
	c.Initramfs = filepath.Join(r, "bin", "anvil-initramfs.cpio.zst")
	c.ImageDir = images
	c.DiskMiB, c.NVMeMiB = 512, 1024
	c.MemoryMiB = 768
	for _, p := range []string{c.Kernel, c.Initramfs} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s missing (make test builds it): %v", p, err)
		}
	}
	if edit != nil {
		edit(&c)
	}
	ctx := context.Background()
	l, err := labkit.Up(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{lab: l, dir: images}
	t.Cleanup(func() {
		if t.Failed() {
			for _, vm := range l.VMs {
				t.Logf("console of VM %d:\n%s", vm.Index, tail(l.ConsoleText(vm), 4000))
			}
			b, _ := os.ReadFile(filepath.Join(c.Dir, "controller.log"))
			t.Logf("controller log:\n%s", tail(string(b), 6000))
		}
		if s.op != nil {
			s.op.Close()
		}
		if err := labkit.Down(c); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", c.Namespace)); err == nil {
			t.Errorf("netns %s left behind", c.Namespace)
		}
	})
	if s.op, err = l.Operator(); err != nil {
		t.Fatal(err)
	}
	for _, vm := range l.VMs {
		s.ids = append(s.ids, vm.UUID)
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (s *suite) wait(t *testing.T, ids []string, st anvilv1.MachineState, d time.Duration) {
	t.Helper()
	if err := labkit.WaitState(context.Background(), s.op, ids, st, d); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) machine(t *testing.T, id string) *anvilv1.Machine {
	t.Helper()
	m, err := s.op.Machines.GetMachine(context.Background(), &anvilv1.GetMachineRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *suite) events(t *testing.T, id string) []*anvilv1.Event {
	t.Helper()
	r, err := s.op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetEvents()
}

// smallImage writes a 64 MiB raw GPT disk image into the image dir.
func (s *suite) smallImage(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(s.dir, name)
	d, err := diskfs.Create(p, 64<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 100000, Type: gpt.LinuxFilesystem, Name: "root"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	return p
}

// tinyImage copies the tiny CI image (make images-tiny) into the image
// dir and registers it; it skips when the image was not built.
func (s *suite) tinyImage(t *testing.T) string {
	t.Helper()
	out := filepath.Join(root(t), "images", "out")
	b, err := os.ReadFile(filepath.Join(out, "tiny.json"))
	if err != nil {
		t.Fatalf("no tiny image (make images-tiny; make test builds it): %v", err)
	}
	var cat struct{ ID, File, Checksum string }
	if err := json.Unmarshal(b, &cat); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(out, cat.File), filepath.Join(s.dir, cat.File)); err != nil {
		t.Fatal(err)
	}
	s.addImage(t, "tiny", cat.File, cat.Checksum, anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD)
	return "tiny"
}

// tinyTarball registers the root filesystem tarball of the tiny image
// (make images-tiny writes it beside the raw image).
func (s *suite) tinyTarball(t *testing.T) string {
	t.Helper()
	out := filepath.Join(root(t), "images", "out")
	b, err := os.ReadFile(filepath.Join(out, "tiny-tar.json"))
	if err != nil {
		t.Fatalf("no tiny tarball (make images-tiny; make test builds it): %v", err)
	}
	var cat struct{ ID, File, Checksum string }
	if err := json.Unmarshal(b, &cat); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(out, cat.File), filepath.Join(s.dir, cat.File)); err != nil {
		t.Fatal(err)
	}
	s.addImage(t, "tiny-tar", cat.File, cat.Checksum, anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD)
	return "tiny-tar"
}

// slowImage is the tiny image followed by 300 MiB of random bytes, raw:
// bootable, and slow enough to install that a test can pull the plug in
// the middle.
func (s *suite) slowImage(t *testing.T) string {
	t.Helper()
	raw := filepath.Join(root(t), "images", "out", "tiny.raw")
	p := filepath.Join(s.dir, "slow.raw")
	if err := copyFile(raw, p); err != nil {
		t.Fatalf("no tiny image (make images-tiny; make test builds it): %v", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 1<<20)
	for range 300 {
		for i := 0; i < len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sum, err := sha256File(p)
	if err != nil {
		t.Fatal(err)
	}
	s.addImage(t, "slow", "slow.raw", sum, anvilv1.ImageFormat_IMAGE_FORMAT_RAW)
	return "slow"
}

func (s *suite) addImage(t *testing.T, id, file, checksum string, format anvilv1.ImageFormat) {
	t.Helper()
	if _, err := s.op.Images.CreateImage(context.Background(), &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: id, Url: labkit.BootURL() + "/images/" + file, Checksum: checksum, Format: format, Os: "anvil-tiny", Version: "1",
		Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func count(evs []*anvilv1.Event, typ anvilv1.EventType) int {
	n := 0
	for _, e := range evs {
		if e.GetType() == typ {
			n++
		}
	}
	return n
}

// lastOf is the message of the last event of type typ, "" when none.
func lastOf(evs []*anvilv1.Event, typ anvilv1.EventType) string {
	msg := ""
	for _, e := range evs {
		if e.GetType() == typ {
			msg = e.GetMessage()
		}
	}
	return msg
}

func TestLab(t *testing.T) {
	s := startSuite(t, 2, nil)
	ctx := context.Background()

	t.Run("network boot to Ready with real inventory and erase", func(t *testing.T) {
		s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_READY, 4*time.Minute)
		if err := s.lab.AttachBMCs(ctx, s.op); err != nil {
			t.Fatal(err)
		}
		for i, vm := range s.lab.VMs {
			m := s.machine(t, s.ids[i])
			var serials []string
			for _, d := range m.GetInventory().GetDisks() {
				serials = append(serials, d.GetSerial())
			}
			if got := strings.Join(serials, ","); !strings.Contains(got, vm.DiskSerial) || !strings.Contains(got, vm.NVMeSerial) {
				t.Errorf("VM %d disks %s, want %s and %s", vm.Index, got, vm.DiskSerial, vm.NVMeSerial)
			}
			if macs := m.GetMacs(); len(macs) != 1 || macs[0] != vm.MAC {
				t.Errorf("VM %d MACs %v, want %s", vm.Index, macs, vm.MAC)
			}
			var wiped string
			for _, e := range s.events(t, s.ids[i]) {
				if e.GetType() == anvilv1.EventType_EVENT_TYPE_WIPED {
					wiped = e.GetMessage()
				}
			}
			// The NVMe disk is erased by the drive itself (Format NVM of its
			// namespace 1 only); namespace 2 carries the protect label and
			// is left alone, byte for byte.
			if !strings.Contains(wiped, "/dev/nvme0n1 nvme-format") || !strings.Contains(wiped, "verified by markers") ||
				!strings.Contains(wiped, "left alone: /dev/nvme0n2 (protected)") {
				t.Errorf("VM %d erase: %q", vm.Index, wiped)
			}
			if err := labkit.ProtectedIntact(vm); err != nil {
				t.Error(err)
			}
			// Where it is plugged in: the lab's switch (lldpd on the
			// bridge) heard on the NIC.
			var heard []string
			for _, n := range m.GetInventory().GetNics() {
				for _, nb := range n.GetLldpNeighbors() {
					heard = append(heard, n.GetMac()+" "+nb.GetSystemName()+"/"+nb.GetPortId())
				}
			}
			if want := vm.MAC + " " + labkit.LLDPSystemName + "/" + labkit.LLDPPortID; !slices.Contains(heard, want) {
				t.Errorf("VM %d LLDP neighbours %v, want %s", vm.Index, heard, want)
			}
			// The IPMI VM's agent found its BMC through /dev/ipmi0 and
			// enrolled it: the controller has its address and a
			// credential nobody typed. The Redfish VM has no in-band BMC;
			// its address is the operator's (AttachBMCs).
			bmcInv := m.GetInventory().GetBmc()
			if labkit.RedfishBMC(vm.Index) {
				if bmcInv != nil || m.GetBmcSource() != "operator" {
					t.Errorf("VM %d (Redfish): in-band BMC %v, BMC source %q, want none and the operator's", vm.Index, bmcInv, m.GetBmcSource())
				}
				continue
			}
			if bmcInv.GetIp() != labkit.BMCIP(vm.Index) || bmcInv.GetMac() != labkit.BMCMAC(vm.Index) || bmcInv.GetEnrollError() != "" {
				t.Errorf("VM %d in-band BMC: %v, want %s / %s", vm.Index, bmcInv, labkit.BMCIP(vm.Index), labkit.BMCMAC(vm.Index))
			}
			if want := "ipmi://anvil:xxxxx@" + labkit.BMCIP(vm.Index); m.GetBmcSource() != "in-band" || m.GetBmcAddress() != want {
				t.Errorf("VM %d BMC %q from %q, want %s enrolled in-band", vm.Index, m.GetBmcAddress(), m.GetBmcSource(), want)
			}
			// The controller chose the password; the agent set it and said so.
			var decided, set bool
			for _, e := range s.events(t, s.ids[i]) {
				if e.GetType() == anvilv1.EventType_EVENT_TYPE_BMC {
					decided = decided || strings.Contains(e.GetMessage(), "enrolled in-band by the agent")
					set = set || strings.HasPrefix(e.GetMessage(), "BMC user anvil (ID 3) set in-band at "+labkit.BMCIP(vm.Index))
				}
			}
			if !decided || !set {
				t.Errorf("VM %d BMC events: enrollment decided %v, set by the agent %v", vm.Index, decided, set)
			}
		}
	})

	t.Run("controller restarted while agents wait", func(t *testing.T) {
		if err := s.lab.StopController(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := s.lab.StartController(ctx); err != nil {
			t.Fatal(err)
		}
		// The agents reconnect; an allocation reaches the waiting agent
		// (checked by the next test, on the same streams).
		s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_READY, time.Minute)
		for _, id := range s.ids {
			if l := s.machine(t, id).GetLiveliness(); l != anvilv1.Liveliness_LIVELINESS_ALIVE {
				t.Errorf("%s liveliness %v after the restart", id, l)
			}
		}
	})

	t.Run("corrupt image is never booted; free erases; Ready again", func(t *testing.T) {
		s.smallImage(t, "corrupt.raw")
		id := s.ids[0]
		if _, err := s.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
			Id: "corrupt", Url: labkit.BootURL() + "/images/corrupt.raw", Checksum: "sha256:" + strings.Repeat("ab", 32),
			Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Os: "none", Version: "1", Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
		}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "corrupt"}); err != nil {
			t.Fatal(err)
		}
		s.wait(t, []string{id}, anvilv1.MachineState_MACHINE_STATE_FAILED, 2*time.Minute)
		m := s.machine(t, id)
		if r := m.GetFailureReason(); !strings.Contains(r, "checksum mismatch") || !strings.Contains(r, "destroyed") {
			t.Errorf("failure reason %q: want the checksum mismatch and the destroyed tables", r)
		}
		for _, e := range s.events(t, id) {
			if e.GetType() == anvilv1.EventType_EVENT_TYPE_BOOTING || e.GetType() == anvilv1.EventType_EVENT_TYPE_PHONED_HOME {
				t.Errorf("a corrupt image got to %v: %s", e.GetType(), e.GetMessage())
			}
		}
		if _, err := s.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id, EraseMode: anvilv1.EraseMode_ERASE_MODE_QUICK}); err != nil {
			t.Fatal(err)
		}
		s.wait(t, []string{id}, anvilv1.MachineState_MACHINE_STATE_READY, 4*time.Minute)
	})

	t.Run("full provisioning: install, kexec, phone home", func(t *testing.T) {
		// The UEFI VM gets the raw image, the BIOS VM the tarball of the
		// same system (the agent writes its GRUB).
		imgs := []string{s.tinyImage(t), s.tinyTarball(t)}
		for i, id := range s.ids {
			if _, err := s.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: imgs[i], Hostname: fmt.Sprintf("e2e-%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_PROVISIONED, 4*time.Minute)
		for i, id := range s.ids {
			evs := s.events(t, id)
			var booting, phoned string
			for _, e := range evs {
				switch e.GetType() {
				case anvilv1.EventType_EVENT_TYPE_BOOTING:
					booting = e.GetMessage()
				case anvilv1.EventType_EVENT_TYPE_PHONED_HOME:
					phoned = e.GetMessage()
				}
			}
			if !strings.Contains(booting, "NoCloud seed") {
				t.Errorf("%s BOOTING without a seed: %s", id, booting)
			}
			// The disk boots by itself on this machine's firmware, and a
			// UEFI machine's boot order has it right after the network.
			want := []string{"firmware: boots from disk on UEFI (p1:\\EFI\\BOOT\\BOOTX64.EFI) and BIOS (MBR boot code, BIOS boot partition p3)"}
			if s.lab.VMs[i].Firmware.UEFI {
				want = append(want, `UEFI: created Boot`, `"anvil: tiny on nvme0n1"`, `network entry Boot00`, `"UEFI PXEv4`)
			} else {
				want = append(want, "GRUB 2.06")
			}
			for _, w := range want {
				if !strings.Contains(booting, w) {
					t.Errorf("VM %d BOOTING lacks %q: %s", i+1, w, booting)
				}
			}
			if strings.Contains(booting, "only by") || strings.Contains(booting, "not kept") {
				t.Errorf("VM %d does not boot from its disk: %s", i+1, booting)
			}
			// The installed OS read its hostname from the seed the agent wrote.
			if !strings.Contains(phoned, fmt.Sprintf("hostname e2e-%d", i)) {
				t.Errorf("%s phoned home without its hostname: %q", id, phoned)
			}
			tl, err := s.lab.Timeline(s.lab.VMs[i])
			if err != nil {
				t.Fatal(err)
			}
			ph := labkit.PhasesOf(id, evs, s.lab.VMs[i].PoweredOn, tl)
			t.Logf("%s (%s): registered %v, ready %v, installing %v, booting %v, phoned home %v after allocation", id[:8], s.lab.VMs[i].Firmware.Name(), ph.Registered, ph.Ready, ph.Installing, ph.Booting, ph.PhonedHome)
		}
	})

	t.Run("power cycle: the installed system boots from its disk and stays provisioned", func(t *testing.T) {
		before := map[string]int{}
		for _, id := range s.ids {
			before[id] = count(s.events(t, id), anvilv1.EventType_EVENT_TYPE_PHONED_HOME)
			if _, err := s.op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_RESET}); err != nil {
				t.Fatal(err)
			}
		}
		reset := time.Now()
		pending := append([]string(nil), s.ids...)
		for len(pending) > 0 {
			if time.Since(reset) > 3*time.Minute {
				t.Fatalf("%v did not phone home after the power cycle", pending)
			}
			var left []string
			for _, id := range pending {
				m := s.machine(t, id)
				if st := m.GetState(); st != anvilv1.MachineState_MACHINE_STATE_PROVISIONED {
					t.Fatalf("%s left Provisioned after the power cycle: %v", id, st)
				}
				if count(s.events(t, id), anvilv1.EventType_EVENT_TYPE_PHONED_HOME) == before[id] {
					left = append(left, id)
				}
			}
			pending = left
			time.Sleep(time.Second)
		}
		t.Logf("both phoned home %.0f s after the reset", time.Since(reset).Seconds())
		for i, vm := range s.lab.VMs {
			// The network boot after the reset is observed (never an
			// event): sent to its disk, the way its firmware boots one.
			var seen *anvilv1.BootObservation
			for _, o := range s.machine(t, s.ids[i]).GetBootObservations() {
				if o.GetTime().AsTime().After(reset.Add(-time.Second)) && seen == nil {
					seen = o
				}
			}
			platform := "pcbios"
			if vm.Firmware.UEFI {
				platform = "efi"
			}
			if seen.GetServed() != "local" || seen.GetPlatform() != platform {
				t.Errorf("VM %d: the network boot after the reset: %v", vm.Index, seen)
			}
			if n := count(s.events(t, s.ids[i]), anvilv1.EventType_EVENT_TYPE_PXE_BOOTING); n != 0 {
				t.Errorf("VM %d: %d PXE_BOOTING events from unauthenticated script requests", vm.Index, n)
			}
			// The first boot was the agent's kexec, which passes no boot
			// loader: GRUB's line and a second phone home are this boot's.
			console := s.lab.ConsoleText(vm)
			if vm.Firmware.UEFI && !regexp.MustCompile(`BdsDxe: starting Boot[0-9A-F]{4} "anvil: tiny on nvme0n1"`).MatchString(console) {
				t.Errorf("VM %d: the firmware did not start the anvil boot entry after iPXE:\n%s", vm.Index, tail(console, 3000))
			}
			if !strings.Contains(console, "anvil: loading /vmlinuz") || strings.Count(console, "anvil-tiny: phoned home") < 2 {
				t.Errorf("VM %d: GRUB did not boot the installed system:\n%s", vm.Index, tail(console, 3000))
			}
		}
	})

	t.Run("reinstall through the BMC", func(t *testing.T) {
		// Both at once: VM 1 through the IPMI BMC its agent enrolled
		// in-band, VM 2 through the operator's Redfish BMC.
		before := map[string]int{}
		for _, id := range s.ids {
			before[id] = count(s.events(t, id), anvilv1.EventType_EVENT_TYPE_PHONED_HOME)
			if _, err := s.op.Machines.ReinstallMachine(ctx, &anvilv1.ReinstallMachineRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}
		s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_PROVISIONED, 5*time.Minute)
		for i, id := range s.ids {
			evs := s.events(t, id)
			if n := count(evs, anvilv1.EventType_EVENT_TYPE_PHONED_HOME); n != before[id]+1 {
				t.Errorf("VM %d phoned home %d times, want %d", i+1, n, before[id]+1)
			}
			if count(evs, anvilv1.EventType_EVENT_TYPE_POWER) == 0 || !strings.Contains(lastOf(evs, anvilv1.EventType_EVENT_TYPE_REGISTERING), "expected boot (power") {
				t.Errorf("VM %d: reinstall did not reset the machine into the agent (an expected boot, registered after the power event)", i+1)
			}
			// Through the protocol of each, and no event shows a password.
			want := "through ipmi://anvil:xxxxx@" + labkit.BMCIP(i+1)
			if labkit.RedfishBMC(i + 1) {
				want = "through redfish+http://admin:xxxxx@"
			}
			if msg := lastOf(evs, anvilv1.EventType_EVENT_TYPE_POWER); !strings.Contains(msg, want) || !strings.Contains(msg, "next boot pxe") {
				t.Errorf("VM %d's reset: %q, want it %s into PXE", i+1, msg, want)
			}
		}
	})

	t.Run("free both provisioned machines: network boot into the agent, erase, Ready again", func(t *testing.T) {
		// Each runs its installed system: the BMC resets it, the network
		// (first in either firmware's order) boots the agent, which erases.
		for _, id := range s.ids {
			if _, err := s.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id, EraseMode: anvilv1.EraseMode_ERASE_MODE_QUICK}); err != nil {
				t.Fatal(err)
			}
		}
		s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_READY, 4*time.Minute)
		for i, id := range s.ids {
			if m := s.machine(t, id); m.GetAllocation() != nil || m.GetFailedReclaim() {
				t.Errorf("VM %d after free: allocation %v, failed reclaim %v", i+1, m.GetAllocation(), m.GetFailedReclaim())
			}
			// A WIPED event after the free's RECLAIM.
			var freed, wiped bool
			for _, e := range s.events(t, id) {
				switch e.GetType() {
				case anvilv1.EventType_EVENT_TYPE_RECLAIM:
					freed, wiped = true, false
				case anvilv1.EventType_EVENT_TYPE_WIPED:
					wiped = wiped || freed
				}
			}
			if !wiped {
				t.Errorf("VM %d was not erased after the free", i+1)
			}
		}
	})

	t.Run("powered off mid-install, re-provisions cleanly", func(t *testing.T) {
		id := s.ids[0]
		img := s.slowImage(t)
		if _, err := s.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: img, Hostname: "e2e-slow"}); err != nil {
			t.Fatal(err)
		}
		// Pull the plug once the image is streaming onto the disk.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			m := s.machine(t, id)
			if m.GetState() == anvilv1.MachineState_MACHINE_STATE_INSTALLING && m.GetProgress().GetBytesDone() > 32<<20 {
				break
			}
			if m.GetState() != anvilv1.MachineState_MACHINE_STATE_ALLOCATED && m.GetState() != anvilv1.MachineState_MACHINE_STATE_INSTALLING {
				t.Fatalf("machine went to %v before the plug was pulled", m.GetState())
			}
			if time.Now().After(deadline) {
				t.Fatal("the install never got going")
			}
			time.Sleep(100 * time.Millisecond)
		}
		off, err := s.op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_OFF})
		if err != nil || off.GetState() != anvilv1.PowerState_POWER_STATE_OFF {
			t.Fatalf("power off: %v %v", off, err)
		}
		time.Sleep(2 * time.Second)
		// The half-written disk holds no partition table and no boot code
		// (they are written last, after the digest): no firmware boots it.
		if err := noBootableTable(s.lab.VMs[0].NVMe); err != nil {
			t.Errorf("after the power cut mid-install: %v", err)
		}
		if _, err := s.op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_ON, NextBoot: anvilv1.BootDevice_BOOT_DEVICE_PXE}); err != nil {
			t.Fatal(err)
		}
		s.wait(t, []string{id}, anvilv1.MachineState_MACHINE_STATE_PROVISIONED, 5*time.Minute)
		evs := s.events(t, id)
		if count(evs, anvilv1.EventType_EVENT_TYPE_INSTALLING) < 2 {
			t.Error("the install did not run again after the power loss")
		}
		if !strings.Contains(evs[len(evs)-1].GetMessage(), "hostname e2e-slow") {
			t.Errorf("last event %q: want the phone home of e2e-slow", evs[len(evs)-1].GetMessage())
		}
	})

	t.Run("anvilctl machine show: the in-band BMC and the switch port", func(t *testing.T) {
		env, prefix := s.lab.Anvilctl()
		cmd := exec.Command(prefix[0], append(prefix[1:], "machine", "show", s.ids[0])...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("anvilctl machine show: %v\n%s", err, out)
		}
		for _, want := range []string{"ipmi://anvil:xxxxx@" + labkit.BMCIP(1) + " (in-band)", "In-band BMC:  address " + labkit.BMCIP(1) + " (static), MAC " + labkit.BMCMAC(1),
			labkit.LLDPSystemName, labkit.LLDPPortID} {
			if !strings.Contains(string(out), want) {
				t.Errorf("anvilctl machine show lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("a wrong BMC password: a clear error, one event, the machine untouched", func(t *testing.T) {
		id := s.ids[0]
		before := s.machine(t, id)
		if _, err := s.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: id, Address: "ipmi://anvil:not-the-password@" + labkit.BMCIP(1)}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			_, err := s.op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: id, Action: anvilv1.PowerAction_POWER_ACTION_STATUS})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "refused the credentials") {
				t.Fatalf("status with a wrong password: %v, want FailedPrecondition naming the credentials", err)
			}
		}
		evs := s.events(t, id)
		var bmcEvents []string
		for _, e := range evs {
			if e.GetType() == anvilv1.EventType_EVENT_TYPE_BMC && strings.Contains(e.GetMessage(), "credentials") {
				bmcEvents = append(bmcEvents, e.GetMessage())
			}
		}
		if len(bmcEvents) != 1 || strings.Contains(bmcEvents[0], "not-the-password") {
			t.Errorf("BMC credential events %q, want exactly one, without the password", bmcEvents)
		}
		after := s.machine(t, id)
		if after.GetState() != before.GetState() || after.GetAllocation().GetImageId() != before.GetAllocation().GetImageId() {
			t.Errorf("machine changed: %v/%v -> %v/%v", before.GetState(), before.GetAllocation(), after.GetState(), after.GetAllocation())
		}
	})

	t.Run("the protected namespaces survived every erase and install", func(t *testing.T) {
		for _, vm := range s.lab.VMs {
			if err := labkit.ProtectedIntact(vm); err != nil {
				t.Error(err)
			}
		}
	})
}

// noBootableTable checks a disk file's first and last MiB: no MBR boot
// signature, no GPT header (primary or backup).
func noBootableTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	head := make([]byte, 1<<20)
	if _, err := f.ReadAt(head, 0); err != nil {
		return err
	}
	tail := make([]byte, 1<<20)
	if _, err := f.ReadAt(tail, st.Size()-int64(len(tail))); err != nil {
		return err
	}
	switch {
	case head[510] == 0x55 && head[511] == 0xaa:
		return fmt.Errorf("%s has an MBR boot signature", path)
	case bytes.Contains(head, []byte("EFI PART")):
		return fmt.Errorf("%s has a primary GPT header", path)
	case bytes.Contains(tail, []byte("EFI PART")):
		return fmt.Errorf("%s has a backup GPT header", path)
	}
	return nil
}

// TestProxyDHCP boots a UEFI VM through its firmware's own PXE client with
// anvil in proxy mode beside another DHCP server that leases the addresses
// (Debian's dnsmasq in the lab's namespace): the firmware combines
// dnsmasq's address with anvil's boot file, fetches iPXE over TFTP, iPXE
// does the same, and the agent leases its address from dnsmasq and
// registers. anvil leases nothing.
func TestProxyDHCP(t *testing.T) {
	s := startSuite(t, 1, func(c *labkit.Config) { c.DHCP, c.Firmware = "proxy", "uefi" })
	s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_READY, 4*time.Minute)
	vm := s.lab.VMs[0]
	leases, err := os.ReadFile(s.lab.DnsmasqLeases())
	if err != nil || !strings.Contains(string(leases), vm.MAC) {
		t.Errorf("dnsmasq's leases %q (%v) lack %s", leases, err, vm.MAC)
	}
	log, err := os.ReadFile(filepath.Join(s.lab.Dir(), "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	var offers, tftp int
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "msg=DHCP") && strings.Contains(l, "mac="+vm.MAC) {
			if !strings.Contains(l, "yiaddr=0.0.0.0") {
				t.Errorf("anvil gave an address in proxy mode: %s", l)
			}
			offers++
		}
		if strings.Contains(l, `msg="TFTP sent"`) && strings.Contains(l, "file=snponly.efi") {
			tftp++
		}
	}
	if offers == 0 || tftp == 0 {
		t.Errorf("%d proxy answers and %d TFTP transfers of snponly.efi to %s", offers, tftp, vm.MAC)
	}
	if console := s.lab.ConsoleText(vm); !strings.Contains(console, "UEFI PXEv4") {
		t.Errorf("the VM did not boot through its firmware's PXE client:\n%s", tail(console, 2000))
	}
}

// TestUEFIHTTPBoot boots a UEFI VM through OVMF's HTTP Boot client alone
// (its PXE entries switched off): DHCP with vendor class HTTPClient gets
// iPXE's EFI image by URL from the boot service, iPXE chains as usual, and
// the agent registers.
func TestUEFIHTTPBoot(t *testing.T) {
	s := startSuite(t, 1, func(c *labkit.Config) { c.Firmware, c.HTTPBoot = "uefi", true })
	s.wait(t, s.ids, anvilv1.MachineState_MACHINE_STATE_READY, 4*time.Minute)
	vm := s.lab.VMs[0]
	if console := s.lab.ConsoleText(vm); !strings.Contains(console, "UEFI HTTPv4") || strings.Contains(console, "UEFI PXEv4") {
		t.Errorf("the VM did not boot through HTTP Boot alone:\n%s", tail(console, 2000))
	}
	log, err := os.ReadFile(filepath.Join(s.lab.Dir(), "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`msg=DHCP .*mac=`+vm.MAC+`.*bootfile=http://\S+/files/snponly.efi`).Match(log) ||
		!regexp.MustCompile(`msg="boot file served" .*file=snponly.efi`).Match(log) {
		t.Error("the controller did not hand out iPXE by HTTP to the HTTP Boot client")
	}
}
