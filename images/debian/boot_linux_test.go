package debian

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/seed"
	"github.com/anvil-metal/anvil/test/labkit/qemu"
)

// phoneHome is one report the test server received.
type phoneHome struct {
	auth, body string
	at         time.Time
}

// TestBootPhonesHome boots the built image in QEMU from its disk under
// OVMF, the way it starts after a power cycle (GRUB on the ESP, the
// kernel through the /vmlinuz link), the disk a virtio disk with the
// NoCloud seed that agent/seed writes (p4, CIDATA), whose
// anvil/phone-home.json points at a server on the host's loopback (user
// networking: the guest reaches it as 10.0.2.2). It passes when the
// installed system's anvil-phone-home.service POSTs with the seed's bearer
// token and the host name cloud-init took from the seed's meta-data.
func TestBootPhonesHome(t *testing.T) {
	image := builtImage(t)
	if testing.Short() {
		t.Skip("boots a VM for minutes; not with -short")
	}
	var err error
	timeout := 10 * time.Minute
	if v := os.Getenv("ANVIL_DEBIAN_BOOT_TIMEOUT"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ANVIL_DEBIAN_BOOT_TIMEOUT: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The phone-home server, on the host's loopback only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan phoneHome, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1024))
		if r.Method != http.MethodPost || r.URL.Path != "/phone-home" {
			http.Error(w, "not here", http.StatusNotFound)
			return
		}
		reports <- phoneHome{r.Header.Get("Authorization"), string(b), time.Now()}
		io.WriteString(w, "ok deb-vm-1\n")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	token := hex.EncodeToString(tok)

	// The disk as the agent leaves it: the image, then the seed.
	disk := filepath.Join(dir, "disk.raw")
	if err := copySparse(image, disk); err != nil {
		t.Fatal(err)
	}
	sres, err := seed.Write(ctx, disk, seed.Config{
		InstanceID: seed.InstanceID("deb-vm-1", "in-1"), Hostname: "deb-vm-1",
		PhoneHomeURL: fmt.Sprintf("http://10.0.2.2:%d/phone-home", port), PhoneHomeToken: token,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed: %s", sres)
	// The disk boots by itself through OVMF: GRUB (\EFI\BOOT\BOOTX64.EFI)
	// and its configuration on the ESP, as after a power cycle.
	rep, err := bootloader.Inspect(disk)
	if err != nil || rep.UEFI == "" || !rep.BIOS {
		t.Fatalf("the image does not boot by itself: %s %v", rep, err)
	}
	console := filepath.Join(dir, "console.log")
	vars := filepath.Join(dir, "vars.fd")
	if err := qemu.EnsureVars(vars); err != nil {
		t.Fatal(err)
	}
	v, err := qemu.Start(qemu.Options{
		Name: "image-boot", MemoryMiB: 1024, CPUs: 2, Console: console, NoReboot: true,
		Firmware: qemu.Firmware{UEFI: true, Vars: vars},
		Devices:  []qemu.Device{qemu.Disk{ID: "vd0", File: disk, Unsafe: true, BootIndex: 1}, qemu.NIC{Net: qemu.User{}, ROM: qemu.NoROM}, qemu.RNG{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Kill()
	start := v.Started
	tail := func() string {
		b, _ := os.ReadFile(console)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-60):], "\n")
	}
	select {
	case r := <-reports:
		took := r.at.Sub(start)
		t.Logf("phoned home %.1f s after QEMU started: %q", took.Seconds(), r.body)
		if r.auth != "Bearer "+token {
			t.Errorf("Authorization %q, want the seed's bearer token", r.auth)
		}
		for _, want := range []string{"debian-12 up", "hostname deb-vm-1", "kernel 6.1.0-"} {
			if !strings.Contains(r.body, want) {
				t.Errorf("body %q lacks %q", r.body, want)
			}
		}
		marks, failed := consoleMarks(console)
		for _, m := range marks {
			t.Log("console: " + m)
		}
		for _, f := range failed {
			t.Errorf("console: %s", f)
		}
		if t.Failed() {
			t.Logf("console:\n%s", tail())
		}
	case <-v.Exited():
		t.Fatalf("QEMU exited before the phone-home (%v): %s\nconsole:\n%s", v.Err(), v.Output(), tail())
	case <-time.After(timeout):
		t.Fatalf("no phone-home within %v\nconsole:\n%s", timeout, tail())
	}
}

// ansi matches the colour escapes of systemd's status lines.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// consoleMarks picks the boot's milestones from the serial console (the
// kernel's timestamps are seconds since it started) and the units systemd
// reported as failed.
func consoleMarks(console string) (marks, failed []string) {
	b, err := os.ReadFile(console)
	if err != nil {
		return []string{fmt.Sprintf("console: %v", err)}, nil
	}
	for _, l := range strings.Split(ansi.ReplaceAllString(string(b), ""), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.Contains(l, "[FAILED]"):
			failed = append(failed, l)
		case strings.Contains(l, "Run /init as init process"), strings.Contains(l, "Cloud-init v."),
			strings.Contains(l, "Reached target network-online.target"), strings.Contains(l, "Reached target multi-user.target"),
			strings.Contains(l, "anvil-phone-home["):
			marks = append(marks, l)
		}
	}
	return marks, failed
}

// copySparse copies an image file, leaving its zero MiBs as holes.
func copySparse(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < st.Size(); {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				out.Close()
				return fmt.Errorf("copy %s to %s: %w", from, to, werr)
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			out.Close()
			return fmt.Errorf("read %s: %w", from, err)
		}
	}
	if err := out.Truncate(st.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
