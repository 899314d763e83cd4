// Command boottime measures how long a machine takes from power-on to
// Provisioned in the QEMU lab (package labkit), network-booting through
// its firmware, against direct boots in the same run (make bench
// BENCH=boot; results in docs/benchmarks.md). Two VMs run at a time in
// both parts, so both see the same load:
//
//	network boot: a UEFI VM (OVMF, its PXE client fetches iPXE over TFTP)
//	  and a BIOS VM (SeaBIOS, iPXE ROM) power on, get DHCP, iPXE, the
//	  agent's kernel and initramfs over HTTP, register, are erased, are
//	  allocated the tiny image as soon as they are Ready, install it,
//	  kexec and phone home. The firmware's share (power-on to the chain
//	  script) and the agent's kernel start come from the controller's log.
//	baseline: two VMs given the agent's kernel and initramfs directly
//	  (-kernel; no firmware boot, no DHCP for the boot, no download) go
//	  the same way to Provisioned; then each is powered off and started
//	  with the installed kernel and initrd directly (-kernel) until it
//	  phones home again; the image file is fetched once from the boot
//	  service with curl inside the lab's namespace.
//
// It prints power-on -> Provisioned per firmware (target: 30 s on SeaBIOS)
// and kernel start -> Provisioned against twice (direct agent boot to
// Ready + image transfer + direct boot of the installed image). Then both
// provisioned machines are reinstalled through their BMCs (the UEFI VM's
// IPMI BMC its agent enrolled in-band, the BIOS VM's Redfish BMC) and the
// time from the call to the agent's registration is split into the
// controller and BMC, the firmware and iPXE (the lab's share under TCG)
// and the agent, against a direct -kernel agent boot to its registration.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/labkit"
)

func main() {
	root, _ := os.Getwd()
	kernel := flag.String("kernel", "/var/cache/anvil/kernel/vmlinuz", "agent kernel")
	initramfs := flag.String("initramfs", filepath.Join(root, "bin/anvil-initramfs.cpio.zst"), "agent initramfs")
	bin := flag.String("bin", filepath.Join(root, "bin"), "directory with anvil-controller and anvilctl")
	image := flag.String("image", filepath.Join(root, "images/out/tiny.json"), "image catalogue entry")
	timeout := flag.Duration("timeout", 5*time.Minute, "how long each machine may take")
	flag.Parse()
	if err := run(context.Background(), *kernel, *initramfs, *bin, *image, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "boottime:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kernel, initramfs, bin, imagePath string, timeout time.Duration) error {
	img, err := labkit.ReadImage(imagePath)
	if err != nil {
		return fmt.Errorf("%w (make images-tiny)", err)
	}
	base := func(direct bool) labkit.Config {
		c := labkit.Defaults(filepath.Join(os.TempDir(), "anvil-boottime"))
		c.Namespace, c.Machines, c.Bin, c.Kernel, c.Initramfs = "anvil-boottime", 2, bin, kernel, initramfs
		c.ImageDir, c.Direct = filepath.Dir(imagePath), direct
		if direct {
			c.Firmware = "bios"
		}
		return c
	}

	fmt.Println("== network boot: a UEFI VM and a BIOS VM, power-on to Provisioned; then both reinstalled through their BMCs")
	var re []reinstall
	netPhases, err := provision(ctx, base(false), img, timeout, func(l *labkit.Lab, op *labkit.Operator, ids []string) error {
		re, err = reinstallTimes(ctx, l, op, ids, timeout)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Println("== baseline: two VMs booting the agent directly (-kernel), then the installed system directly")
	var transfer time.Duration
	var installed []time.Duration
	dirPhases, err := provision(ctx, base(true), img, timeout, func(l *labkit.Lab, op *labkit.Operator, ids []string) error {
		if transfer, err = fetchTime(ctx, l, img.File); err != nil {
			return err
		}
		installed, err = directInstalled(ctx, l, op, ids, timeout)
		return err
	})
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nRUN\tFIRMWARE\tCHAIN (firmware+iPXE)\tKERNEL START\tREADY\tPOWER-ON→PROVISIONED\tKERNEL→PROVISIONED")
	for _, p := range netPhases {
		fmt.Fprintf(tw, "network\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Firmware, sec(p.Chain), sec(p.KernelStart), sec(p.Ready), sec(p.Total), sec(p.KernelToProvisioned()))
	}
	for i, p := range dirPhases {
		fmt.Fprintf(tw, "direct -kernel\t-\t-\t0\t%s\t%s\t%s  (installed system direct: phoned home %s after start)\n", sec(p.Ready), sec(p.Total), sec(p.Total), sec(installed[i]))
	}
	tw.Flush()
	var readySum, instSum time.Duration
	for i, p := range dirPhases {
		readySum += p.Ready
		instSum += installed[i]
	}
	n := time.Duration(len(dirPhases))
	baseline := readySum/n + transfer + instSum/n
	fmt.Printf("\nimage transfer (curl of %s from the boot service inside the lab's namespace, on the host: a lower bound): %s\n", img.File, sec(transfer))
	fmt.Printf("baseline = direct agent boot to Ready %s + transfer %s + direct boot of the installed system %s = %s\n",
		sec(readySum/n), sec(transfer), sec(instSum/n), sec(baseline))
	for _, p := range netPhases {
		fmt.Printf("%s: power-on -> Provisioned %s (target 30 s on SeaBIOS); kernel start -> Provisioned %s = %.2fx the baseline (target <= 2x)\n",
			p.Firmware, sec(p.Total), sec(p.KernelToProvisioned()), p.KernelToProvisioned().Seconds()/baseline.Seconds())
	}

	// Reinstall -> the agent registered, against a direct -kernel boot of
	// the agent to its registration (no BMC, no firmware, no download).
	var regSum time.Duration
	for _, p := range dirPhases {
		regSum += p.Registered
	}
	direct := regSum / n
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nREINSTALL\tBMC\tCONTROLLER+BMC (call→reset done)\tFIRMWARE+iPXE (→chain script; the lab's share under TCG)\tAGENT (→registered)\tTOTAL")
	for _, r := range re {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.firmware, r.bmc, sec(r.power), sec(r.fw), sec(r.agent), sec(r.total))
	}
	tw.Flush()
	for _, r := range re {
		fmt.Printf("%s through %s: reinstall -> registered %s; without the firmware's share %s = %.2fx a direct -kernel agent boot to registered (%s)\n",
			r.firmware, r.bmc, sec(r.total), sec(r.total-r.fw), (r.total-r.fw).Seconds()/direct.Seconds(), sec(direct))
	}
	return nil
}

// reinstall is one machine's way from the ReinstallMachine call to its
// agent's registration: the controller and the BMC (until the POWER event
// of the reset into PXE), the firmware and iPXE (until the chain script
// was served: under TCG, mostly the lab's cost), the agent (its files, its
// kernel, its registration).
type reinstall struct {
	firmware, bmc           string
	power, fw, agent, total time.Duration
}

// reinstallTimes gives the Redfish VMs their BMC (the IPMI VMs' agents
// enrolled theirs in-band), reinstalls every machine at once and times each
// to its registration.
func reinstallTimes(ctx context.Context, l *labkit.Lab, op *labkit.Operator, ids []string, timeout time.Duration) ([]reinstall, error) {
	if err := l.AttachBMCs(ctx, op); err != nil {
		return nil, err
	}
	start := make([]time.Time, len(ids))
	for i, id := range ids {
		start[i] = time.Now()
		if _, err := op.Machines.ReinstallMachine(ctx, &anvilv1.ReinstallMachineRequest{Id: id}); err != nil {
			return nil, fmt.Errorf("reinstall VM %d: %w", i+1, err)
		}
	}
	out := make([]reinstall, len(ids))
	deadline := time.Now().Add(timeout)
	for i, id := range ids {
		vm := l.VMs[i]
		out[i].firmware = vm.Firmware.Name()
		out[i].bmc = "IPMI (enrolled in-band)"
		if labkit.RedfishBMC(vm.Index) {
			out[i].bmc = "Redfish (operator's address)"
		}
		var power, registered time.Time
		for registered.IsZero() {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("VM %d did not register after its reinstall", vm.Index)
			}
			time.Sleep(500 * time.Millisecond)
			r, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
			if err != nil {
				return nil, err
			}
			for _, e := range r.GetEvents() {
				at := e.GetTime().AsTime()
				switch {
				case at.Before(start[i]):
				case e.GetType() == anvilv1.EventType_EVENT_TYPE_POWER && power.IsZero():
					power = at
				case e.GetType() == anvilv1.EventType_EVENT_TYPE_REGISTERING && !power.IsZero() && registered.IsZero():
					registered = at
				}
			}
		}
		f, err := os.Open(filepath.Join(l.Dir(), "controller.log"))
		if err != nil {
			return nil, err
		}
		tl, err := labkit.ReadTimeline(f, vm.MAC, power)
		f.Close()
		if err != nil {
			return nil, err
		}
		if tl.Chain.IsZero() {
			return nil, fmt.Errorf("VM %d: no chain script in the controller's log after its reset", vm.Index)
		}
		out[i].power, out[i].fw, out[i].agent = power.Sub(start[i]), tl.Chain.Sub(power), registered.Sub(tl.Chain)
		out[i].total = registered.Sub(start[i])
	}
	return out, nil
}

func sec(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// provision brings a lab up, allocates each machine with img as soon as it
// is Ready, waits until all are Provisioned, runs after (if any), reads the
// phases and takes the lab down.
func provision(ctx context.Context, c labkit.Config, img labkit.Image, timeout time.Duration,
	after func(*labkit.Lab, *labkit.Operator, []string) error) ([]labkit.Phases, error) {
	l, err := labkit.Up(ctx, c)
	if err != nil {
		return nil, err
	}
	defer labkit.Down(c) //nolint:errcheck // the measurement is what matters; the next run's Up removes leftovers
	op, err := l.Operator()
	if err != nil {
		return nil, err
	}
	defer op.Close()
	if err := labkit.AddImage(ctx, op, img); err != nil {
		return nil, err
	}
	if err := l.Provision(ctx, op, img.ID, "bench", timeout); err != nil {
		return nil, err
	}
	ps, err := l.Phases(ctx, op)
	if err != nil {
		return nil, err
	}
	if after != nil {
		var ids []string
		for _, vm := range l.VMs {
			ids = append(ids, vm.UUID)
		}
		if err := after(l, op, ids); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// fetchTime fetches the image from the boot service inside the lab's
// namespace, as the agent does, to /dev/null.
func fetchTime(ctx context.Context, l *labkit.Lab, file string) (time.Duration, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.Namespace(), "curl", "-sf", "-o", "/dev/null", "-w", "%{time_total}",
		labkit.BootURL()+"/images/"+file).Output()
	if err != nil {
		return 0, fmt.Errorf("curl the image: %w", err)
	}
	s, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("curl time %q: %w", out, err)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// directInstalled powers each provisioned VM off and starts its installed
// kernel and initrd directly, timing until it phones home again; the two
// VMs run at once.
func directInstalled(ctx context.Context, l *labkit.Lab, op *labkit.Operator, ids []string, timeout time.Duration) ([]time.Duration, error) {
	// Powered off through their BMCs, as an operator would: the
	// controller then accepts the installed system's next phone home (a
	// Provisioned machine's phone home is accepted only after a reboot the
	// controller caused or knew of). Then the QEMU processes go, and the
	// installed kernels start directly.
	if err := l.AttachBMCs(ctx, op); err != nil {
		return nil, err
	}
	before := map[string]int{}
	for i, vm := range l.VMs {
		before[ids[i]], _ = phoneHomes(ctx, op, ids[i])
		if _, err := op.Machines.PowerMachine(ctx, &anvilv1.PowerMachineRequest{Id: ids[i], Action: anvilv1.PowerAction_POWER_ACTION_OFF}); err != nil {
			return nil, fmt.Errorf("power VM %d off through its BMC: %w", vm.Index, err)
		}
		if err := l.KillVM(vm); err != nil {
			return nil, err
		}
	}
	for _, vm := range l.VMs {
		b, err := bootconfig.Lookup(vm.NVMe)
		if err != nil {
			return nil, fmt.Errorf("VM %d's installed system: %w", vm.Index, err)
		}
		dir := filepath.Join(filepath.Dir(vm.NVMe), "direct")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		k, ir := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
		for _, f := range []struct {
			ref  bootconfig.FileRef
			path string
		}{{b.Kernel, k}, {b.Initrds[0], ir}} {
			data, err := bootconfig.ReadFile(vm.NVMe, f.ref)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(f.path, data, 0o644); err != nil {
				return nil, err
			}
		}
		if err := l.StartVMDirect(vm, k, ir, b.Cmdline); err != nil {
			return nil, err
		}
	}
	out := make([]time.Duration, len(ids))
	deadline := time.Now().Add(timeout)
	for i, id := range ids {
		for {
			n, last := phoneHomes(ctx, op, id)
			if n > before[id] {
				out[i] = last.Sub(l.VMs[i].PoweredOn)
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("VM %d did not phone home from a direct boot of its installed system", i+1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out, nil
}

// phoneHomes counts a machine's PHONED_HOME events and says when the last
// one was recorded.
func phoneHomes(ctx context.Context, op *labkit.Operator, id string) (int, time.Time) {
	r, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		return -1, time.Time{}
	}
	n, last := 0, time.Time{}
	for _, e := range r.GetEvents() {
		if e.GetType() == anvilv1.EventType_EVENT_TYPE_PHONED_HOME {
			n, last = n+1, e.GetTime().AsTime()
		}
	}
	return n, last
}
