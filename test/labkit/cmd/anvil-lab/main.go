// Command anvil-lab runs the QEMU mini-lab (package labkit): `up` boots
// the VMs from the network to Ready and, with an image catalogue entry,
// installs it on every machine and waits until all of them phoned home;
// `down` removes everything the lab created; `env` prints how to point
// anvilctl at it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/test/labkit"
)

func main() {
	root, _ := os.Getwd()
	c := labkit.Defaults(filepath.Join(root, ".lab"))
	flag.StringVar(&c.Dir, "dir", c.Dir, "lab directory")
	flag.StringVar(&c.Namespace, "netns", c.Namespace, "network namespace of the lab")
	flag.IntVar(&c.Machines, "machines", c.Machines, "number of VMs")
	flag.StringVar(&c.Bin, "bin", filepath.Join(root, "bin"), "directory with anvil-controller, anvilctl and anvil-lab-chassis (make build)")
	flag.StringVar(&c.Kernel, "kernel", "/var/cache/anvil/kernel/vmlinuz", "agent kernel")
	flag.StringVar(&c.Initramfs, "initramfs", filepath.Join(root, "bin/anvil-initramfs.cpio.zst"), "agent initramfs")
	flag.IntVar(&c.MemoryMiB, "memory", c.MemoryMiB, "MiB of RAM per VM")
	flag.StringVar(&c.Accel, "accel", c.Accel, "tcg, kvm or auto (default: $ANVIL_QEMU_ACCEL, else auto)")
	flag.StringVar(&c.Firmware, "firmware", c.Firmware, "mix (odd VMs UEFI, even VMs BIOS), uefi or bios")
	image := flag.String("image", "", "image catalogue entry (JSON: id, file, checksum, format, os, version) to install on every machine as soon as it is Ready; empty: stop at Ready")
	timeout := flag.Duration("timeout", 10*time.Minute, "how long each phase may take")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch flag.Arg(0) {
	case "up":
		err = up(ctx, c, *image, *timeout)
	case "down":
		err = labkit.Down(c)
		if err == nil {
			fmt.Println("lab removed")
		}
	case "env":
		printEnv(c)
	default:
		err = fmt.Errorf("usage: anvil-lab [flags] up|down|env")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "anvil-lab:", err)
		os.Exit(1)
	}
}

func say(f string, a ...any) { fmt.Printf("\033[1m==> "+f+"\033[0m\n", a...) }

func printEnv(c labkit.Config) {
	l, err := labkit.Open(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "anvil-lab:", err)
		os.Exit(1)
	}
	env, prefix := l.Anvilctl()
	fmt.Printf("export %s\nalias anvilctl='%s'\n", strings.Join(env, " "), strings.Join(prefix, " "))
}

func up(ctx context.Context, c labkit.Config, imagePath string, timeout time.Duration) error {
	var img labkit.Image
	if imagePath != "" {
		var err error
		if img, err = labkit.ReadImage(imagePath); err != nil {
			return err
		}
		c.ImageDir = filepath.Dir(imagePath)
	}
	say("starting the lab: %d VMs, controller %s in netns %s (logs in %s)", c.Machines, labkit.ControllerAddr(), c.Namespace, c.Dir)
	l, err := labkit.Up(ctx, c)
	if err != nil {
		return err
	}
	var fws []string
	for _, vm := range l.VMs {
		fws = append(fws, fmt.Sprintf("VM %d %s", vm.Index, vm.Firmware.Name()))
	}
	say("accelerator: %s; %s; the VMs network-boot the agent from the controller's DHCP, TFTP and iPXE", l.Accel, strings.Join(fws, ", "))
	op, err := l.Operator()
	if err != nil {
		return err
	}
	defer op.Close()
	if img.ID != "" {
		if err := labkit.AddImage(ctx, op, img); err != nil {
			return err
		}
		say("each machine is allocated with %s as soon as it is Ready, then installs, kexecs and phones home", img.ID)
	}
	if err := l.Provision(ctx, op, img.ID, "lab", timeout); err != nil {
		return err
	}
	want := "Ready"
	if img.ID != "" {
		want = "Provisioned"
	}
	say("%d machines %s in %s", len(l.VMs), want, time.Since(l.Started).Round(time.Second))
	if err := l.AttachBMCs(ctx, op); err != nil {
		return err
	}
	say("each machine's BMC is ipmi_sim (odd VMs, enrolled in-band) or the lab's Redfish service (even VMs), both over QMP to its VM: anvilctl machine power ID on|off|reset|status")
	ps, err := l.Phases(ctx, op)
	if err != nil {
		return err
	}
	fmt.Println()
	labkit.PrintPhases(os.Stdout, ps)
	fmt.Println()
	env, prefix := l.Anvilctl()
	ls := exec.CommandContext(ctx, prefix[0], append(prefix[1:], "machine", "ls")...)
	ls.Env = append(os.Environ(), env...)
	ls.Stdout, ls.Stderr = os.Stdout, os.Stderr
	if err := ls.Run(); err != nil {
		return fmt.Errorf("anvilctl machine ls: %w", err)
	}
	say("the lab is up. Use anvilctl inside it with:")
	fmt.Printf("  export %s\n  %s machine ls\n", strings.Join(env, " "), strings.Join(prefix, " "))
	fmt.Printf("Consoles: %s/vm*/console.log. Remove everything with: make lab-down\n", c.Dir)
	return nil
}
