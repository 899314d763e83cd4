package labkit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// chooseAccel picks the accelerator: "tcg" and "kvm" as configured;
// "auto" uses KVM only when /dev/kvm exists and a probe boots the lab
// kernel under it to its first messages within seconds. On machines where
// KVM is present but broken (nested virtualisation that hangs or dies on
// MSRs), the probe fails and the lab runs under TCG.
func chooseAccel(ctx context.Context, c Config) (string, error) {
	if c.Accel != "auto" {
		return c.Accel, nil
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return "tcg", nil
	}
	if kvmWorks(ctx, c.Kernel) {
		return "kvm", nil
	}
	return "tcg", nil
}

// kvmWorks boots kernel without an initrd under KVM: a working KVM prints
// the kernel's banner and panics (no root) well within the timeout.
func kvmWorks(ctx context.Context, kernel string) bool {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
		"-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // exits when the guest panics (-no-reboot), or is killed at the timeout
	return strings.Contains(out.String(), "Linux version") && strings.Contains(out.String(), "Kernel panic")
}

// describe is a one-line summary of the lab for logs.
func (l *Lab) describe() string {
	return fmt.Sprintf("%d VMs (%s, %d MiB, %d vCPU) in netns %s, controller %s", len(l.VMs), l.Accel, l.cfg.MemoryMiB, l.cfg.CPUs, l.cfg.Namespace, ControllerAddr())
}
