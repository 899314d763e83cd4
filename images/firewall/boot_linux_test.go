package firewall

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

	"gopkg.in/yaml.v3"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/seed"
	"github.com/anvil-metal/anvil/test/labkit/qemu"
)

// probeScript runs from the test's runcmd (cloud-init's final stage): it
// waits until anvil-firewall has replaced the guard, then reports on the
// console what the test cannot see from outside.
const probeScript = `for i in $(seq 600); do nft list chain inet anvil guard >/dev/null 2>&1 || break; sleep 1; done
echo "anvil-test: ip_forward=$(sysctl -n net.ipv4.ip_forward) ipv6_forwarding=$(sysctl -n net.ipv6.conf.all.forwarding)" >/dev/console
echo "anvil-test: guard=$(nft list chain inet anvil guard >/dev/null 2>&1 && echo present || echo gone) service=$(systemctl is-active anvil-firewall.service) guard_unit=$(systemctl is-active anvil-firewall-guard.service) nftables_unit=$(systemctl is-enabled nftables.service)" >/dev/console
echo "anvil-test: tables $(nft list tables | tr '\n' ' ') chains $(nft list ruleset | grep -c 'chain ')" >/dev/console
`

// userData is UserData for the boot test, plus a runcmd with probeScript.
func bootUserData(t *testing.T, s Settings) []byte {
	t.Helper()
	ud, err := UserData(s)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(ud, &doc); err != nil {
		t.Fatal(err)
	}
	doc["runcmd"] = []any{[]string{"sh", "-c", probeScript}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("#cloud-config\n"), b...)
}

// TestBootFirewall boots the built image in QEMU as it runs after
// anvil-agent's kexec (the kernel, initrd and command line agent/bootconfig
// finds; a virtio disk with the seed agent/seed writes), with user-data
// from UserData: standalone mode with a default-deny egress policy and the
// metrics on every interface, which QEMU's user networking forwards from a
// port on the host's loopback. It passes when the machine phones home as
// debian-12-firewall, the metrics report a successful apply, and the
// console shows forwarding on, the guard replaced and the units as they
// should be.
func TestBootFirewall(t *testing.T) {
	image := builtImage(t)
	if testing.Short() {
		t.Skip("boots a VM for minutes; not with -short")
	}
	var err error
	timeout := 12 * time.Minute
	if v := os.Getenv("ANVIL_FIREWALL_BOOT_TIMEOUT"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ANVIL_FIREWALL_BOOT_TIMEOUT: %v", err)
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
	reports := make(chan string, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1024))
		if r.Method != http.MethodPost || r.URL.Path != "/phone-home" {
			http.Error(w, "not here", http.StatusNotFound)
			return
		}
		reports <- r.Header.Get("Authorization") + "\n" + string(b)
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	token := hex.EncodeToString(tok)
	// A free loopback port for the guest's metrics.
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsPort := ml.Addr().(*net.TCPAddr).Port
	ml.Close()

	ud := bootUserData(t, Settings{
		Policies: map[string][]byte{"deny-egress.yaml": []byte(denyEgress)},
		Args:     []string{"--cluster-interface", "cluster0", "--default-egress", "deny", "--metrics-addr", "0.0.0.0:9105"},
	})
	disk := filepath.Join(dir, "disk.raw")
	if err := copySparse(image, disk); err != nil {
		t.Fatal(err)
	}
	sres, err := seed.Write(ctx, disk, seed.Config{
		InstanceID: seed.InstanceID("fw-vm-1", "in-1"), Hostname: "fw-vm-1", UserData: ud,
		PhoneHomeURL: fmt.Sprintf("http://10.0.2.2:%d/phone-home", port), PhoneHomeToken: token,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed: %s", sres)
	boot, err := bootconfig.Lookup(disk)
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	for _, f := range []struct {
		ref  bootconfig.FileRef
		dest string
	}{{boot.Kernel, kernel}, {boot.Initrds[0], initrd}} {
		b, err := bootconfig.ReadFile(disk, f.ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.dest, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	console := filepath.Join(dir, "console.log")
	v, err := qemu.Start(qemu.Options{
		Name: "image-boot", MemoryMiB: 1024, CPUs: 2, Console: console, NoReboot: true,
		Kernel: kernel, Initrd: initrd, Append: boot.Cmdline + " console=ttyS0,115200 panic=-1",
		Devices: []qemu.Device{qemu.Disk{ID: "vd0", File: disk, Unsafe: true}, qemu.NIC{Net: qemu.User{HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:9105", metricsPort)}}}, qemu.RNG{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Kill()
	start := v.Started
	tail := func() string {
		b, _ := os.ReadFile(console)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-80):], "\n")
	}

	var phoned, applied, probed bool
	deadline := time.After(timeout)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	client := &http.Client{Timeout: 5 * time.Second}
	for !phoned || !applied || !probed {
		select {
		case r := <-reports:
			auth, body, _ := strings.Cut(r, "\n")
			t.Logf("phoned home %.0f s after QEMU started: %q", time.Since(start).Seconds(), body)
			if auth != "Bearer "+token {
				t.Errorf("Authorization %q, want the seed's bearer token", auth)
			}
			for _, want := range []string{ImageID + " up", "hostname fw-vm-1"} {
				if !strings.Contains(body, want) {
					t.Errorf("phone-home note %q lacks %q", body, want)
				}
			}
			phoned = true
		case <-v.Exited():
			t.Fatalf("QEMU exited (%v): %s\nconsole:\n%s", v.Err(), v.Output(), tail())
		case <-deadline:
			t.Fatalf("after %v: phoned home %v, metrics report an apply %v, console probe %v\nconsole:\n%s", timeout, phoned, applied, probed, tail())
		case <-tick.C:
			if !applied {
				if m, ok := scrape(client, metricsPort); ok && strings.Contains(m, "\nanvil_firewall_last_apply_success 1\n") {
					t.Logf("metrics %.0f s after QEMU started: %s", time.Since(start).Seconds(), metricLines(m, "anvil_firewall_applies_total", "anvil_firewall_last_apply_success", "anvil_firewall_invalid_policies"))
					applied = true
				}
			}
			if !probed {
				b, _ := os.ReadFile(console)
				probed = strings.Contains(string(b), "anvil-test: tables ")
			}
		}
	}

	b, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	text := ansi.ReplaceAllString(string(b), "")
	for _, want := range []string{
		"anvil-test: ip_forward=1 ipv6_forwarding=1",
		"anvil-test: guard=gone service=active guard_unit=active nftables_unit=disabled",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.Contains(l, "[FAILED]"):
			t.Errorf("console: %s", l)
		case strings.Contains(l, "anvil-test:"), strings.Contains(l, "anvil-firewall"), strings.Contains(l, "Reached target multi-user.target"):
			t.Log("console: " + l)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", tail())
	}
}

// ansi matches the colour escapes of systemd's status lines.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// scrape reads the guest's metrics through QEMU's port forward.
func scrape(c *http.Client, port int) (string, bool) {
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", false
	}
	return "\n" + string(b), true
}

// metricLines picks the samples of the named metrics.
func metricLines(m string, names ...string) string {
	var out []string
	for _, l := range strings.Split(m, "\n") {
		for _, n := range names {
			if strings.HasPrefix(l, n+" ") || strings.HasPrefix(l, n+"{") {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "; ")
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
