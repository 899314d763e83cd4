package seed

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/bootconfig"
	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/agent/disks/gptread/gpttest"
	"github.com/anvil-metal/anvil/agent/image/growpart"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	"github.com/anvil-metal/anvil/test/loopdev"
)

func sampleConfig(id string) Config {
	return Config{InstanceID: id, Hostname: "web-1", SSHKeys: []string{key1},
		UserData:     []byte("#cloud-config\nruncmd:\n  - [touch, /tmp/ran]\n"),
		PhoneHomeURL: "https://10.0.2.2:8443/v1/phone-home", PhoneHomeToken: "tok-123"}
}

// rootfsDisk is a 1 GiB image file with a rootfs install on it.
func rootfsDisk(t *testing.T) (string, rootfs.Result) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{"boot/vmlinuz-6.1": "kernel", "boot/initrd.img-6.1": "initrd", "etc/hostname": "x\n"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img := loopdev.SparseFile(t, 1<<30)
	res, err := rootfs.Install(context.Background(), img, true, &buf, "", rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	return img, res
}

// blkid probes the filesystem at byte off of disk as cloud-init's
// find_devs_with does (blkid), bypassing its cache.
func blkid(t *testing.T, disk string, off int64) map[string]string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(off), "-o", "export", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("blkid at %d: %v\n%s", off, err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// checkSeed reads the seed back through independent readers and compares
// it with what Files renders.
func checkSeed(t *testing.T, disk string, res Result, c Config) {
	t.Helper()
	off := int64(res.Partition.Start) * res.Sector
	if m := blkid(t, disk, off); m["LABEL"] != Label || m["TYPE"] != "vfat" {
		t.Errorf("blkid: %v, want LABEL=%s TYPE=vfat", m, Label)
	}
	if out, err := exec.Command("sfdisk", "--part-label", disk, fmt.Sprint(res.Partition.Index)).Output(); err != nil || strings.TrimSpace(string(out)) != PartName {
		t.Errorf("GPT name of p%d: %q, %v", res.Partition.Index, out, err)
	}
	if out, err := exec.Command("sfdisk", "--verify", disk).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("No errors detected")) {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := fat32.Read(file.New(f, true), Size, off, res.Sector)
	if err != nil {
		t.Fatalf("go-diskfs cannot read the seed: %v", err)
	}
	want, err := Files(c)
	if err != nil {
		t.Fatal(err)
	}
	_, hasMtools := exec.LookPath("mtype")
	for _, w := range want {
		got, err := fs.ReadFile(fsys, w.Name)
		if err != nil || !bytes.Equal(got, w.Data) {
			t.Errorf("go-diskfs %s: %q, %v; want %q", w.Name, got, err, w.Data)
		}
		if hasMtools != nil {
			continue
		}
		cmd := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", disk, off), "::/"+w.Name)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		got, err = cmd.Output()
		if err != nil || !bytes.Equal(got, w.Data) {
			t.Errorf("mtools %s: %q, %v; want %q", w.Name, got, err, w.Data)
		}
	}
	if hasMtools == nil {
		cmd := exec.Command("mlabel", "-s", "-i", fmt.Sprintf("%s@@%d", disk, off), "::")
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), Label) {
			t.Errorf("mlabel: %q, %v", out, err)
		}
	}
	fsckVFAT(t, disk, off)
}

// fsckVFAT runs dosfstools' fsck on the seed; it may report only the two
// known, harmless deviations of go-diskfs v1.9.4 (see rootfs's fatCheck).
func fsckVFAT(t *testing.T, disk string, off int64) {
	t.Helper()
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		return
	}
	src, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	vol := filepath.Join(t.TempDir(), "seed.img")
	dst, err := os.Create(vol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, off, Size)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	out, _ := exec.Command("fsck.vfat", "-n", vol).CombinedOutput()
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

func TestWriteAfterARootfsInstall(t *testing.T) {
	img, rfs := rootfsDisk(t)
	c := sampleConfig("anvil-m1-in-1")
	res, err := Write(context.Background(), img, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	const size = 1 << 30
	if res.Partition != (Extent{Index: 3, Start: (size - 65<<20) / 512, End: (size-1<<20)/512 - 1}) || len(res.Replaced) != 0 {
		t.Errorf("seed at %+v (replaced %v), want p3 in the disk's last 65 MiB", res.Partition, res.Replaced)
	}
	if len(res.Files) != 4 || !strings.Contains(res.String(), "p3") {
		t.Errorf("result %s", res)
	}
	checkSeed(t, img, res, c)
	// The installed system still boots its root by PARTUUID.
	b, err := bootconfig.Lookup(img)
	if err != nil || b.Cmdline != "root=PARTUUID="+rfs.Plan.Root.GUID+" ro rootwait" {
		t.Errorf("boot config after the seed: %s, %v", b.Describe(), err)
	}
}

func TestWriteReplacesAnEarlierSeed(t *testing.T) {
	img, _ := rootfsDisk(t)
	if _, err := Write(context.Background(), img, sampleConfig("anvil-m1-in-1")); err != nil {
		t.Fatal(err)
	}
	c := sampleConfig("anvil-m1-in-2")
	c.UserData, c.PhoneHomeURL = nil, ""
	res, err := Write(context.Background(), img, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Partition.Index != 3 || len(res.Replaced) != 1 || res.Replaced[0] != 3 || len(res.Files) != 3 {
		t.Errorf("second seed %s", res)
	}
	checkSeed(t, img, res, c)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range tbl.Partitions {
		if p.Name == PartName {
			n++
		}
	}
	if len(tbl.Partitions) != 3 || n != 1 {
		t.Errorf("%d partitions, %d seeds: want 3 and 1", len(tbl.Partitions), n)
	}
}

// rawImage writes a small GPT disk image (ESP and a Linux root) to the
// start of target, as a raw cloud image install does.
func rawImage(t *testing.T, target string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "raw.img")
	d, err := diskfs.Create(p, 32<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 14, Start: 2048, End: 10239, Type: gpt.BIOSBoot, Name: "bios"},
		{Index: 15, Start: 10240, End: 20479, Type: gpt.EFISystemPartition, Name: "ESP"},
		{Index: 1, Start: 20480, End: 65502, Type: gpt.LinuxRootX86_64, Name: "root"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWriteAfterAGrownRawImageOnALoopDevice(t *testing.T) {
	const size = 256 << 20
	dev := loopdev.New(t, size)
	rawImage(t, dev)
	g, err := growpart.Grow(dev, size, 512, growpart.Options{Reserve: Reserve, Drop: []string{PartName}})
	if err != nil || !g.Grow {
		t.Fatalf("grow: %+v, %v", g, err)
	}
	c := sampleConfig("anvil-m2-in-9")
	res, err := Write(context.Background(), dev, c)
	if err != nil {
		t.Fatal(err)
	}
	// Partitions 1, 14 and 15 are taken: the seed is p2, right after the
	// grown root partition.
	if res.Partition.Index != 2 || res.Partition.Start != g.NewEnd+1 || int64(res.Partition.End+1)*512 != size-1<<20 {
		t.Errorf("seed %+v after root ending at %d", res.Partition, g.NewEnd)
	}
	checkSeed(t, dev, res, c)
}

func TestWriteRefusesAFullDisk(t *testing.T) {
	const size = 128 << 20
	img := loopdev.SparseFile(t, size)
	rawImage(t, img)
	// Grown without a reserve, the root partition fills the disk.
	if _, err := growpart.Grow(img, size, 512, growpart.Options{}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Write(context.Background(), img, sampleConfig("i"))
	if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "partition 1 ends at MiB 127") {
		t.Fatalf("err = %v, want ErrNoRoom naming partition 1", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("a refused seed changed the disk")
	}
	if _, err := Write(context.Background(), loopdev.SparseFile(t, size), sampleConfig("i")); !errors.Is(err, ErrNoGPT) {
		t.Errorf("blank disk: err = %v, want ErrNoGPT", err)
	}
	if _, err := Write(context.Background(), img, Config{}); err == nil {
		t.Error("an invalid config was written")
	}
}

// TestWriteRefusesAForgedGPT: a GPT whose headers pass their CRC but
// declare 2^32-1 partition entries of 2^32-1 bytes is refused, and the
// disk left as it was. The old Write handed it to go-diskfs's gpt.Read,
// which sizes its buffer from the header: the product overflows and
// make panics.
func TestWriteRefusesAForgedGPT(t *testing.T) {
	const size = 32 << 20 // rawImage's size: the backup header is at the end
	img := loopdev.SparseFile(t, size)
	rawImage(t, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	gpttest.HugeEntries(b, size)
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Write(context.Background(), img, sampleConfig("i"))
	if !errors.Is(err, ErrNoGPT) || !errors.Is(err, gptread.ErrUnreadable) || !strings.Contains(err.Error(), "entries of 4294967295 bytes") {
		t.Fatalf("err = %v, want ErrNoGPT and gptread.ErrUnreadable naming the entry size", err)
	}
	if after, err := os.ReadFile(img); err != nil || !bytes.Equal(after, b) {
		t.Errorf("a refused seed changed the disk (%v)", err)
	}
}
