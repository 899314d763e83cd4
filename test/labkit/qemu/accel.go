package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// AccelEnv names the environment variable that forces the accelerator of
// every VM ("tcg", "kvm" or "auto").
const AccelEnv = "ANVIL_QEMU_ACCEL"

// ChooseAccel is the one accelerator policy of the lab and the tests:
// want "tcg" or "kvm" as given; empty takes $ANVIL_QEMU_ACCEL, else
// "auto". "auto" uses KVM only when /dev/kvm exists and a probe boots
// kernel under it to its panic within seconds (on the development machines
// /dev/kvm exists but KVM hangs or dies on MSRs); otherwise TCG. The
// probe's answer is kept for the rest of the host's boot in a file under
// the temporary directory, so a test suite probes once.
func ChooseAccel(ctx context.Context, want, kernel string) (string, error) {
	if want == "" {
		want = os.Getenv(AccelEnv)
	}
	switch want {
	case "tcg", "kvm":
		return want, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("accelerator %q: want tcg, kvm or auto", want)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil || kernel == "" {
		return "tcg", nil
	}
	cache := probeCache()
	if b, err := os.ReadFile(cache); err == nil {
		if a := strings.TrimSpace(string(b)); a == "tcg" || a == "kvm" {
			return a, nil
		}
	}
	a := "tcg"
	if kvmWorks(ctx, kernel) {
		a = "kvm"
	}
	if ctx.Err() == nil {
		os.WriteFile(cache, []byte(a+"\n"), 0o644) //nolint:errcheck // a lost cache costs one more probe
	}
	return a, nil
}

// probeCache is the probe's answer for this boot of the host.
func probeCache() string {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return filepath.Join(os.TempDir(), "anvil-kvm-probe-"+strings.TrimSpace(string(id)))
}

// kvmWorks boots kernel without an initrd under KVM: a working KVM prints
// the kernel's banner and panics (no root) well within the timeout.
func kvmWorks(ctx context.Context, kernel string) bool {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary, "-accel", "kvm", "-cpu", "host", "-m", "256",
		"-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // exits when the guest panics (-no-reboot), or is killed at the timeout
	return strings.Contains(out.String(), "Linux version") && strings.Contains(out.String(), "Kernel panic")
}
