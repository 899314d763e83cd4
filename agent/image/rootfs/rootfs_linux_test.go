package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// entry is one archive member for the test archives.
type entry struct {
	h    tar.Header
	body []byte
}

func archive(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.h
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string, mode int64) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func reg(name string, mode int64, uid int, body string) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: uid}, body: []byte(body)}
}

func link(typ byte, name, target string) entry {
	return entry{h: tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: 0o777}}
}

// sampleRootfs is a small root filesystem with every kind of entry a
// distribution tarball holds.
func sampleRootfs(t *testing.T) ([]byte, []byte) {
	es, big := sampleEntries()
	return archive(t, es), big
}

func sampleEntries() ([]entry, []byte) {
	big := make([]byte, 3<<20+123)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	longTarget := "../" + strings.Repeat("very-long-directory-name/", 4) + "target"
	es := []entry{
		dir("./", 0o755),
		dir("./etc/", 0o755),
		reg("./etc/hostname", 0o644, 0, "web-1\n"),
		reg("./etc/fstab", 0o644, 0, "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"),
		dir("./usr/", 0o755),
		dir("./usr/bin/", 0o755),
		reg("./usr/bin/su", 0o4755, 0, "#!/bin/true\n"),
		reg("./usr/bin/perl", 0o755, 0, "perl binary"),
		link(tar.TypeLink, "./usr/bin/perl5.36.0", "./usr/bin/perl"),
		link(tar.TypeSymlink, "./usr/bin/python3", "python3.11"),
		link(tar.TypeSymlink, "./usr/bin/long", longTarget),
		link(tar.TypeSymlink, "./bin", "usr/bin"),
		dir("./home/", 0o755),
		{h: tar.Header{Typeflag: tar.TypeDir, Name: "./home/user/", Mode: 0o700, Uid: 1000, Gid: 1000}},
		reg("./home/user/.profile", 0o600, 1000, "export PS1='$ '\n"),
		dir("./tmp/", 0o1777),
		reg("./var/lib/blob", 0o644, 0, string(big)),
		{h: tar.Header{Typeflag: tar.TypeChar, Name: "./dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{h: tar.Header{Typeflag: tar.TypeFifo, Name: "./run/initctl", Mode: 0o600}},
		{h: tar.Header{Typeflag: tar.TypeReg, Name: "./usr/bin/ping", Mode: 0o755,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00"}}, body: []byte("ping")},
		dir("./boot/", 0o755),
		reg("./boot/vmlinuz-6.1.0-9-cloud-amd64", 0o644, 0, "old kernel"),
		reg("./boot/vmlinuz-6.1.0-10-cloud-amd64", 0o644, 0, "new kernel"),
		reg("./boot/initrd.img-6.1.0-10-cloud-amd64", 0o644, 0, "new initrd"),
		dir("./boot/efi/", 0o700),
		reg("./boot/efi/EFI/BOOT/BOOTX64.EFI", 0o644, 0, "MZ efi binary"),
		link(tar.TypeSymlink, "./boot/efi/EFI/link", "BOOT"),
		// Names cannot leave the filesystem being built.
		reg("../../../escaped", 0o644, 0, "inside"),
	}
	return es, big
}

// imageFile is a sparse disk image of size bytes.
func imageFile(t *testing.T, size int64) string { return loopdev.SparseFile(t, size) }

// debugfs runs e2fsprogs' debugfs on the root filesystem, an independent
// reader of what go-diskfs wrote.
func debugfs(t *testing.T, img string, p Plan, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, fmt.Sprintf("%s?offset=%d", img, int64(p.Root.Start)*p.Sector)).Output()
	if err != nil {
		t.Fatalf("debugfs %q: %v", req, err)
	}
	return string(out)
}

func TestInstallRootfsArchive(t *testing.T) {
	for _, zeroed := range []bool{false, true} {
		t.Run(fmt.Sprintf("zeroed=%v", zeroed), func(t *testing.T) {
			arc, big := sampleRootfs(t)
			img := imageFile(t, 1<<30)
			res, err := Install(context.Background(), img, zeroed, bytes.NewReader(arc), "", Options{Layout: Layout{ESPSize: 64 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			c := res.Counts
			if c.Files != 12 || c.HardLinks != 1 || c.Special != 2 || c.Xattrs != 1 || c.ESPSkipped != 1 || c.Symlinks != 3 {
				t.Errorf("counts %+v", c)
			}
			if zeroed && res.Skipped == 0 {
				t.Error("zeroed target: no zero write skipped")
			}
			if !zeroed && res.Skipped != 0 {
				t.Error("zero writes skipped on a target not known to be zeroed")
			}
			// e2fsprogs accepts the filesystem (exit 0: no errors; -n never fixes).
			out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, int64(res.Plan.Root.Start)*res.Plan.Sector)).CombinedOutput()
			if err != nil {
				t.Fatalf("e2fsck: %v\n%s", err, out)
			}
			// dosfstools accepts the ESP.
			esp := filepath.Join(t.TempDir(), "esp.img")
			copyRange(t, img, esp, int64(res.Plan.ESP.Start)*res.Plan.Sector, res.Plan.ESP.Bytes(res.Plan.Sector))
			fatCheck(t, esp)
			if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil {
				t.Fatalf("sfdisk --verify: %v\n%s", err, out)
			}

			checks := []struct{ req, want string }{
				{"cat /etc/hostname", "web-1\n"},
				{"cat /etc/fstab.anvil-orig", "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"},
				{"cat /etc/fstab", Fstab(res.Plan, Layout{})},
				{"cat /usr/bin/perl5.36.0", "perl binary"},
				{"cat /escaped", "inside"},
				{"cat /home/user/.profile", "export PS1='$ '\n"},
			}
			for _, ck := range checks {
				if got := debugfs(t, img, res.Plan, ck.req); got != ck.want {
					t.Errorf("%s = %q, want %q", ck.req, got, ck.want)
				}
			}
			if got := debugfs(t, img, res.Plan, "cat /var/lib/blob"); got != string(big) {
				t.Errorf("/var/lib/blob: %d bytes differ from the archive's %d", len(got), len(big))
			}
			stats := []struct{ path, mode, user string }{
				{"/usr/bin/su", "04755", "0"},
				{"/home/user", "0700", "1000"},
				{"/home/user/.profile", "0600", "1000"},
				{"/tmp", "01777", "0"},
				{"/boot/efi", "0700", "0"},
			}
			modeRE := regexp.MustCompile(`Mode:\s+(\d+)`)
			userRE := regexp.MustCompile(`User:\s+(\d+)`)
			for _, s := range stats {
				out := debugfs(t, img, res.Plan, "stat "+s.path)
				m, u := modeRE.FindStringSubmatch(out), userRE.FindStringSubmatch(out)
				if m == nil || u == nil || m[1] != s.mode || u[1] != s.user {
					t.Errorf("%s: mode %v user %v, want %s %s\n%s", s.path, m, u, s.mode, s.user, out)
				}
			}
			for p, want := range map[string]string{"/usr/bin/python3": "python3.11", "/bin": "usr/bin", "/usr/bin/long": "../" + strings.Repeat("very-long-directory-name/", 4) + "target"} {
				// A fast link's target is in the inode (stat shows it), a
				// slow one's in a data block (cat reads it).
				st := debugfs(t, img, res.Plan, "stat "+p)
				if !strings.Contains(st, "Type: symlink") || (!strings.Contains(st, fmt.Sprintf("Fast link dest: %q", want)) && debugfs(t, img, res.Plan, "cat "+p) != want) {
					t.Errorf("%s: not a symlink to %s:\n%s", p, want, st)
				}
			}
			if got := debugfs(t, img, res.Plan, "stat /dev/null"); !strings.Contains(got, "not found") && strings.Contains(got, "Type: character") {
				t.Errorf("device node created: %s", got)
			}

			// The kexec lookup finds the newest kernel through the manifest.
			b, err := bootconfig.Lookup(img)
			if err != nil {
				t.Fatal(err)
			}
			if b.Kernel != (bootconfig.FileRef{Partition: 2, Path: "boot/vmlinuz-6.1.0-10-cloud-amd64"}) ||
				len(b.Initrds) != 1 || b.Initrds[0].Path != "boot/initrd.img-6.1.0-10-cloud-amd64" ||
				b.Cmdline != "root=PARTUUID="+res.Plan.Root.GUID+" ro rootwait" {
				t.Errorf("boot lookup: %s", b.Describe())
			}
			if k, err := bootconfig.ReadFile(img, b.Kernel); err != nil || string(k) != "new kernel" {
				t.Errorf("kernel bytes %q, %v", k, err)
			}
			if efi, err := bootconfig.ReadFile(img, bootconfig.FileRef{Partition: 1, Path: "EFI/BOOT/BOOTX64.EFI"}); err != nil || string(efi) != "MZ efi binary" {
				t.Errorf("ESP file %q, %v", efi, err)
			}
		})
	}
}

func copyRange(t *testing.T, from, to string, off, n int64) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, io.NewSectionReader(src, off, n)); err != nil {
		t.Fatal(err)
	}
}

func TestInstallRootfsKeepsTheArchivesManifest(t *testing.T) {
	arc := archive(t, []entry{
		reg("anvil/boot.json", 0o644, 0, `{"kernel":"vmlinuz","cmdline":"root=LABEL=root quiet"}`),
		reg("vmlinuz", 0o644, 0, "k"),
		reg("boot/vmlinuz-1.0", 0o644, 0, "other"),
	})
	img := imageFile(t, 1<<30)
	res, err := Install(context.Background(), img, true, bytes.NewReader(arc), "", Options{Layout: Layout{ESPSize: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OwnManifest || res.Kernel.Path != "" {
		t.Errorf("result %+v", res)
	}
	b, err := bootconfig.Lookup(img)
	if err != nil || b.Cmdline != "root=LABEL=root quiet" || b.Kernel.Path != "vmlinuz" {
		t.Errorf("lookup %s, %v", b.Describe(), err)
	}
}

func TestInstallRootfsRefusesBadArchives(t *testing.T) {
	good, _ := sampleRootfs(t)
	cases := []struct {
		name string
		arc  []byte
		size int64
		want string
		is   error
	}{
		{name: "truncated", arc: good[:len(good)/2], size: 1 << 30, want: "unexpected EOF"},
		{name: "not a tar", arc: bytes.Repeat([]byte("garbage!"), 1000), size: 1 << 30, want: "read archive"},
		{name: "disk too small", arc: good, size: 300 << 20, is: ErrDiskTooSmall},
		{name: "entry below a symlink", arc: archive(t, []entry{link(tar.TypeSymlink, "lib", "usr/lib"), reg("lib/x/y", 0o644, 0, "y")}), size: 1 << 30, want: "lib is a file or link"},
		{name: "hard link to nothing", arc: archive(t, []entry{link(tar.TypeLink, "a", "missing")}), size: 1 << 30, want: "not a regular file earlier"},
		{name: "duplicate entry", arc: archive(t, []entry{reg("etc/hostname", 0o644, 0, "a"), reg("etc/hostname", 0o644, 0, "b")}), size: 1 << 30, is: ErrDuplicate},
		{name: "file over directory", arc: archive(t, []entry{dir("etc", 0o755), reg("etc", 0o644, 0, "x")}), size: 1 << 30, want: "is a directory earlier"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := imageFile(t, c.size)
			_, err := Install(context.Background(), img, false, bytes.NewReader(c.arc), "", Options{Layout: Layout{ESPSize: 64 << 20}})
			if err == nil {
				t.Fatal("install succeeded")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("err = %v, want %v", err, c.is)
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to say %q", err, c.want)
			}
		})
	}
}

func TestInstallRootfsStopsWhenCancelled(t *testing.T) {
	arc, _ := sampleRootfs(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Install(ctx, imageFile(t, 1<<30), false, bytes.NewReader(arc), "", Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestZeroSkippingSkipsOnlyUntouchedZeroes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	// Fill with a pattern: a skipped write leaves it, a real one does not.
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xAA}, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zs, err := newZeroSkipping(fileStorage(f), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := zs.Writable()
	zero := make([]byte, 4096)
	write := func(b []byte, off int64) {
		if n, err := w.WriteAt(b, off); err != nil || n != len(b) {
			t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(b), off, n, err)
		}
	}
	at := func(off int64) byte {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b[0]
	}
	write(zero, 0) // untouched MiB 0: skipped
	if at(0) != 0xAA {
		t.Error("zero write to an untouched region reached the file")
	}
	write([]byte{1}, 1<<20+10) // dirties MiB 1
	write(zero, 1<<20+4096)    // same MiB: must be written
	if at(1<<20+4096) != 0 {
		t.Error("zero write to a written MiB was skipped")
	}
	write(zero, 2<<20-2048) // straddles MiB 1 (written) and MiB 2 (untouched)
	if at(2<<20-1) != 0 {
		t.Error("the part of a zero write over a written MiB was skipped")
	}
	if at(2<<20) != 0xAA {
		t.Error("the part of a zero write over an untouched MiB reached the file")
	}
	write([]byte{7, 0, 0}, 3<<20) // not all zero: written
	if at(3<<20) != 7 {
		t.Error("data write skipped")
	}
	if wr, sk := zs.Stats(); sk != 4096+2048 || wr != 1+4096+2048+3 {
		t.Errorf("stats written %d skipped %d", wr, sk)
	}
}

func fileStorage(f *os.File) backend.Storage { return file.New(f, false) }

// fatCheck runs dosfstools' fsck.fat, which must find nothing but two
// known deviations of go-diskfs v1.9.4 that neither firmware nor Linux
// mind: the '..' entry of a directory in the root names cluster 2 (the
// FAT32 root's own cluster) instead of 0, and the FSInfo free-cluster
// count is left "unknown" (0xFFFFFFFF, which the FAT specification allows).
func fatCheck(t *testing.T, img string) {
	t.Helper()
	out, _ := exec.Command("fsck.vfat", "-n", img).CombinedOutput()
	known := regexp.MustCompile(`^(fsck\.fat .*|/[^/]+|  Invalid '\.\.' entry in the second slot\. Fixing\.|Free cluster summary uninitialized \(should be \d+\)|Leaving filesystem unchanged\.|.*: \d+ files, \d+/\d+ clusters|)$`)
	for _, line := range strings.Split(string(out), "\n") {
		if !known.MatchString(line) {
			t.Fatalf("fsck.vfat found a problem: %q\n%s", line, out)
		}
	}
	if !strings.Contains(string(out), " files, ") {
		t.Fatalf("fsck.vfat did not check the filesystem:\n%s", out)
	}
}

// TestCommitNeverLeavesHalfATable: at each synced step of the commit (where
// a power cut leaves the disk), the GPT reader finds a whole table or none,
// never an unreadable one, and sector 0 is signed (0x55AA) only in the last
// step.
func TestCommitNeverLeavesHalfATable(t *testing.T) {
	arc, _ := sampleRootfs(t)
	img := imageFile(t, 1<<30)
	var states []string
	o := Options{Layout: Layout{ESPSize: 64 << 20}, commitSynced: func(step int) {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		mbr := make([]byte, 512)
		if _, err := f.ReadAt(mbr, 0); err != nil {
			t.Fatal(err)
		}
		signed := mbr[510] == 0x55 && mbr[511] == 0xaa
		_, err = gptread.Read(f, 1<<30, 512)
		switch {
		case err != nil && !errors.Is(err, gptread.ErrNoGPT):
			t.Errorf("after commit step %d the disk holds half a table: %v", step, err)
		case signed != (step == 2):
			t.Errorf("after commit step %d sector 0 signed=%v", step, signed)
		}
		states = append(states, fmt.Sprintf("%d:%v", step, err == nil))
	}}
	if _, err := Install(context.Background(), img, false, bytes.NewReader(arc), "", o); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(states, " "); got != "0:true 1:true 2:true" {
		t.Fatalf("commit states %q: want three steps, each with a readable table (the backup first)", got)
	}
}
