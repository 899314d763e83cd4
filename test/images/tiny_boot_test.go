// Package images boots the anvil-tiny CI image (images/tiny) in QEMU under
// TCG, the way a machine boots it after anvil-agent installed it: the
// image on a virtio disk with a NoCloud seed partition appended (package
// nocloud, in the agent's place), the kernel, initrd and command line
// taken from the image's own boot manifest (agent/bootconfig, as for the
// kexec). User networking maps the guest's 10.0.2.2 to the host's
// loopback, where an HTTP server takes the phone home. The image comes
// from `make images-tiny` (images/out, or ANVIL_TINY_DIR); `make test`
// builds it first.
package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	"github.com/anvil-metal/anvil/agent/seed"
	"github.com/anvil-metal/anvil/images/nocloud"
	"github.com/anvil-metal/anvil/images/tiny"
	"github.com/anvil-metal/anvil/test/labkit/qemu"
)

// guestHost is the host's loopback as QEMU's user networking shows it to
// the guest.
const guestHost = "10.0.2.2"

// image finds the built image.
func image(t *testing.T) (raw string, cat tiny.Catalogue) {
	t.Helper()
	dir := os.Getenv("ANVIL_TINY_DIR")
	var err error
	if dir == "" {
		if dir, err = filepath.Abs("../../images/out"); err != nil {
			t.Fatal(err)
		}
	}
	cat, err = tiny.ReadCatalogue(filepath.Join(dir, tiny.CatalogueFile))
	if err != nil {
		t.Fatalf("no tiny image in %s (make images-tiny; make test builds it): %v", dir, err)
	}
	return filepath.Join(dir, cat.RawFile), cat
}

// sparseCopy copies src to dst, leaving zero blocks as holes.
func sparseCopy(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		t.Fatal(err)
	}
	buf, zero := make([]byte, 64<<10), make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				t.Fatal(werr)
			}
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// bootFiles extracts the kernel and initrd the image's boot configuration
// names, as the agent does before its kexec.
func bootFiles(t *testing.T, disk string) (kernel, initrd, cmdline string) {
	t.Helper()
	b, err := bootconfig.Lookup(disk)
	if err != nil {
		t.Fatalf("boot configuration of %s: %v", disk, err)
	}
	if len(b.Initrds) != 1 {
		t.Fatalf("boot configuration %s: want one initrd", b.Describe())
	}
	dir := t.TempDir()
	for _, f := range []struct {
		ref  bootconfig.FileRef
		path *string
		name string
	}{{b.Kernel, &kernel, "vmlinuz"}, {b.Initrds[0], &initrd, "initrd"}} {
		data, err := bootconfig.ReadFile(disk, f.ref)
		if err != nil {
			t.Fatal(err)
		}
		*f.path = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, initrd, b.Cmdline
}

// boot starts QEMU on disk: through the firmware fw when kernel is empty
// (its boot loader), else with the kernel, initrd and command line.
func boot(t *testing.T, disk string, fw qemu.Firmware, kernel, initrd, cmdline string) *qemu.VM {
	t.Helper()
	accel, err := qemu.ChooseAccel(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if fw.UEFI {
		fw.Vars = filepath.Join(dir, "vars.fd")
		if err := qemu.EnsureVars(fw.Vars); err != nil {
			t.Fatal(err)
		}
	}
	return qemu.StartT(t, qemu.Options{
		Name: "tiny-" + fw.Name(), Accel: accel, Firmware: fw, Console: filepath.Join(dir, "console.log"), NoReboot: true,
		Kernel: kernel, Initrd: initrd, Append: cmdline,
		Devices: []qemu.Device{
			qemu.RNG{},
			qemu.NIC{Net: qemu.User{}, ROM: qemu.NoROM},
			qemu.Disk{ID: "vd0", File: disk, Serial: "TINY-VD0", BootIndex: 1},
		},
	})
}

// waitConsole waits until the console matches re.
func waitConsole(t *testing.T, v *qemu.VM, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := v.WaitConsole(ctx, re)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// phoneHome is one request the server saw.
type phoneHome struct {
	method, path, auth, body string
	status                   int
}

// TestTinyPhonesHome boots the image from its disk with a seed, under
// SeaBIOS and under OVMF, as a machine boots it after a power cycle: the
// firmware starts GRUB (boot code in the MBR and core image in the BIOS
// boot partition; \EFI\BOOT\BOOTX64.EFI), GRUB the kernel; then waits
// for the phone home: POST to the seed's url with the seed's bearer token,
// naming the seed's hostname. The first answer is 503, so the image must
// retry.
//
// The tarball of the same system is installed the way the agent installs
// it (agent/image/rootfs with GRUB from agent/bootloader/mkgrub, then
// agent/seed's NoCloud partition) and boots the same way: GRUB reads the
// kernel from the ext4 root go-diskfs made, through the /vmlinuz link.
func TestTinyPhonesHome(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"raw", "tarball"} {
		for _, fw := range []qemu.Firmware{{}, {UEFI: true}} {
			t.Run(kind+"/"+fw.Name(), func(t *testing.T) {
				t.Parallel()
				phonesHome(t, fw, kind)
			})
		}
	}
}

// rawDisk is the raw image with a seed appended (images/nocloud).
func rawDisk(t *testing.T, raw, url, token string) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.raw")
	sparseCopy(t, raw, disk)
	nc, err := seed.NetworkConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := nocloud.Seed{
		MetaData:      []byte("instance-id: tiny-test-1\nlocal-hostname: tiny-vm-1\n"),
		UserData:      []byte("#cloud-config\n"),
		NetworkConfig: nc,
		PhoneHome:     &nocloud.PhoneHome{URL: url, Token: token},
	}
	if _, err := nocloud.Append(disk, s, nocloud.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	return disk
}

// tarballDisk is a 1 GiB disk the tarball was installed on as the agent
// does it, with the agent's seed.
func tarballDisk(t *testing.T, dir, url, token string) string {
	t.Helper()
	cat, err := tiny.ReadCatalogue(filepath.Join(dir, tiny.TarCatalogueFile))
	if err != nil {
		t.Fatalf("no tiny tarball (make images-tiny): %v", err)
	}
	arc, err := os.Open(filepath.Join(dir, cat.RawFile))
	if err != nil {
		t.Fatal(err)
	}
	defer arc.Close()
	grub, err := mkgrub.Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1<<30); err != nil {
		t.Fatal(err)
	}
	res, err := rootfs.Install(context.Background(), disk, true, arc, `anvil.test=1 anvil.quoted="a b; c"`,
		rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}, Bootloader: &grub, KernelArgs: "console=ttyS0,115200 panic=-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tarball install: %s", res)
	if _, err := seed.Write(context.Background(), disk, seed.Config{InstanceID: "tiny-test-1", Hostname: "tiny-vm-1", PhoneHomeURL: url, PhoneHomeToken: token}); err != nil {
		t.Fatal(err)
	}
	return disk
}

func phonesHome(t *testing.T, fw qemu.Firmware, kind string) {
	raw, cat := image(t)
	var (
		mu   sync.Mutex
		seen []phoneHome
		ok   = make(chan phoneHome, 1)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		p := phoneHome{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"), body: string(b), status: http.StatusOK}
		if len(seen) == 0 {
			p.status = http.StatusServiceUnavailable
		}
		seen = append(seen, p)
		if p.status != http.StatusOK {
			http.Error(w, "controller busy", p.status)
			return
		}
		fmt.Fprintln(w, "ok")
		select {
		case ok <- p:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	token := "anvp_" + hex.EncodeToString(tok)
	url := "http://" + guestHost + ":" + port + "/phone-home"
	disk := rawDisk(t, raw, url, token)
	if kind == "tarball" {
		disk = tarballDisk(t, filepath.Dir(raw), url, token)
	}
	v := boot(t, disk, fw, "", "", "")
	var got phoneHome
	select {
	case got = <-ok:
	case <-v.Exited():
		t.Fatalf("QEMU exited before the phone home: %v", v.Err())
	case <-time.After(90 * time.Second):
		t.Fatal("no phone home within 90 s")
	}
	phoned := time.Since(v.Started)
	if got.method != http.MethodPost || got.path != "/phone-home" {
		t.Errorf("phone home was %s %s, want POST /phone-home", got.method, got.path)
	}
	if got.auth != "Bearer "+token {
		t.Errorf("Authorization %q, want the seed's bearer token", got.auth)
	}
	for _, want := range []string{"tiny image up", "hostname tiny-vm-1", "kernel " + cat.Kernel, "instance-id tiny-test-1", "anvil-tiny " + cat.Version} {
		if !strings.Contains(got.body, want) {
			t.Errorf("phone-home body %q has no %q", got.body, want)
		}
	}
	mu.Lock()
	attempts := len(seen)
	mu.Unlock()
	if attempts != 2 {
		t.Errorf("%d requests, want 2 (503, then 200)", attempts)
	}

	m := waitConsole(t, v, regexp.MustCompile(`anvil-tiny: phoned home .*uptime=(\S+)`), 10*time.Second)
	waitConsole(t, v, regexp.MustCompile(`anvil-tiny: idling outcome="phoned home"`), 5*time.Second)
	console := v.ConsoleText()
	for _, want := range []string{"anvil: loading /vmlinuz", "anvil-tiny: seed found where=\"/dev/vda partition 4", "anvil-tiny: hostname set hostname=tiny-vm-1",
		"anvil-tiny: WARN: phone home failed; retrying"} {
		if !strings.Contains(console, want) {
			t.Errorf("console has no %q", want)
		}
	}
	// Idling, not exited: the kernel would panic, and QEMU stop, if
	// u-root's init ran out of children.
	select {
	case <-v.Exited():
		t.Fatalf("QEMU exited after the phone home: %v", v.Err())
	case <-time.After(time.Second):
	}
	if kind == "tarball" {
		// GRUB booted the first entry, the archive's /vmlinuz link, with the
		// install's extra kernel arguments.
		if strings.Contains(console, "anvil: loading /boot/vmlinuz-") || !strings.Contains(console, "anvil.test=1") || !strings.Contains(console, "anvil.quoted=a b; c") {
			t.Error("GRUB did not boot the /vmlinuz entry with the install's extra kernel arguments, quoted one included")
		}
	}
	t.Logf("%s %s: phoned home %.1f s after QEMU started (guest uptime %s); body %q", kind, fw.Name(), phoned.Seconds(), m[1], got.body)
}

// TestTinyWithoutSeed boots the image as it is, without a seed, the way
// the agent's kexec starts it (the kernel, initrd and command line of its
// boot manifest): it must say so and idle.
func TestTinyWithoutSeed(t *testing.T) {
	t.Parallel()
	raw, _ := image(t)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	sparseCopy(t, raw, disk)
	kernel, initrd, cmdline := bootFiles(t, disk)
	if !strings.Contains(cmdline, "console=ttyS0") {
		t.Errorf("cmdline %q has no console=ttyS0", cmdline)
	}
	v := boot(t, disk, qemu.Firmware{}, kernel, initrd, cmdline)
	waitConsole(t, v, regexp.MustCompile(`anvil-tiny: WARN: no seed: nothing to phone home to`), 60*time.Second)
	waitConsole(t, v, regexp.MustCompile(`anvil-tiny: idling outcome="no seed"`), 5*time.Second)
	select {
	case <-v.Exited():
		t.Fatalf("QEMU exited after the no-seed message: %v", v.Err())
	case <-time.After(time.Second):
	}
	t.Logf("no seed reported %.1f s after QEMU started", time.Since(v.Started).Seconds())
}
