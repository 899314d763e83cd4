package growpart

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	esp  = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	root = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	swap = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
)

func TestPlan(t *testing.T) {
	cases := []struct {
		name  string
		parts []Part
		grow  bool
		index int
	}{
		{"root last grows", []Part{{1, 2048, 4095, esp}, {2, 4096, 9999, root}}, true, 2},
		{"lower-case type", []Part{{1, 2048, 9999, "0fc63daf-8483-4772-8e47-7d69e4c79e3d"}}, true, 1},
		{"order in the table does not matter", []Part{{2, 4096, 9999, root}, {1, 2048, 4095, esp}}, true, 2},
		{"swap last is left alone", []Part{{1, 2048, 9999, root}, {2, 10000, 12000, swap}}, false, 2},
		{"already full", []Part{{1, 2048, 20000, root}}, false, 1},
		{"no partition", nil, false, 0},
	}
	for _, c := range cases {
		d := Plan(c.parts, 20000)
		if d.Grow != c.grow || d.Index != c.index || d.Reason == "" {
			t.Errorf("%s: %+v, want grow=%v index=%d with a reason", c.name, d, c.grow, c.index)
		}
		if d.Grow && d.NewEnd != 20000 {
			t.Errorf("%s: new end %d", c.name, d.NewEnd)
		}
	}
}

// smallImage makes a 16 MiB GPT image with an ESP and a root partition.
func smallImage(t *testing.T, lastType gpt.Type) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "small.img")
	d, err := diskfs.Create(p, 16<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 8191, Type: gpt.EFISystemPartition, Name: "ESP"},
		{Index: 2, Start: 8192, End: 32734, Type: lastType, Name: "root"},
	}}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGrowMovesTheBackupGPTAndGrowsRoot(t *testing.T) {
	img := smallImage(t, gpt.LinuxRootX86_64)
	disk := filepath.Join(t.TempDir(), "disk.img")
	const size = 64 << 20
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, size); err != nil {
		t.Fatal(err)
	}
	res, err := Grow(disk, size, 512, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.GPT || !res.Moved || !res.Grow || res.Index != 2 {
		t.Fatalf("result %+v", res)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The backup header is in the disk's last LBA and points back at LBA 1.
	last := make([]byte, 512)
	if _, err := f.ReadAt(last, size-512); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(last, []byte("EFI PART")) || binary.LittleEndian.Uint64(last[24:32]) != size/512-1 || binary.LittleEndian.Uint64(last[32:40]) != 1 {
		t.Fatalf("no valid backup GPT header at the disk's end: %q", last[:40])
	}
	tbl, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(size/512 - 34); tbl.Partitions[1].End != want || tbl.LastDataSector() != want {
		t.Errorf("root ends at %d (last usable %d), want %d", tbl.Partitions[1].End, tbl.LastDataSector(), want)
	}
	if tbl.Partitions[0].End != 8191 {
		t.Errorf("ESP changed: ends at %d", tbl.Partitions[0].End)
	}
	// sfdisk exits 0 even when it finds errors; its verdict is in the text.
	if sfdisk, err := exec.LookPath("sfdisk"); err == nil {
		out, err := exec.Command(sfdisk, "--verify", disk).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("No errors detected")) {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
	}
	// A second Grow finds nothing to do.
	again, err := Grow(disk, size, 512, Options{})
	if err != nil || again.Moved || again.Grow {
		t.Errorf("second grow: %+v, %v", again, err)
	}
}

func TestGrowLeavesAForeignLastPartitionButMovesTheBackup(t *testing.T) {
	img := smallImage(t, gpt.LinuxSwap)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, append(img, make([]byte, 16<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Grow(disk, 32<<20, 512, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Moved || res.Grow {
		t.Fatalf("result %+v: want the backup moved and swap left alone", res)
	}
}

func TestGrowWithoutGPTIsANoOp(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Grow(disk, 1<<20, 512, Options{})
	if err != nil || res.GPT {
		t.Fatalf("%+v, %v", res, err)
	}
	b, _ := os.ReadFile(disk)
	if n, _ := io.Copy(io.Discard, bytes.NewReader(b)); n != 1<<20 || !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Error("a disk without GPT was modified")
	}
}

func TestGrowLeavesTheReserveAndDropsAStaleSeed(t *testing.T) {
	// A 16 MiB image whose last partition is a seed left from an earlier
	// install: dropped, so the root partition before it grows.
	p := filepath.Join(t.TempDir(), "seeded.img")
	d, err := diskfs.Create(p, 16<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 8191, Type: gpt.EFISystemPartition, Name: "ESP"},
		{Index: 2, Start: 8192, End: 24575, Type: gpt.LinuxRootX86_64, Name: "root"},
		{Index: 3, Start: 24576, End: 32734, Type: gpt.MicrosoftBasicData, Name: "cidata"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	const size = 256 << 20
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	res, err := Grow(p, size, 512, Options{Reserve: 65 << 20, Drop: []string{"cidata"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Moved || !res.Grow || res.Index != 2 || len(res.Dropped) != 1 || res.Dropped[0] != 3 {
		t.Fatalf("result %+v", res)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(tbl.Partitions) != 2 {
		t.Fatalf("partitions %+v: want the seed gone", tbl.Partitions)
	}
	if want := uint64((size-65<<20)/512 - 1); tbl.Partitions[1].End != want {
		t.Errorf("root ends at %d, want %d (65 MiB before the end)", tbl.Partitions[1].End, want)
	}
	if out, err := exec.Command("sfdisk", "--verify", p).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("No errors detected")) {
		t.Errorf("sfdisk --verify:\n%s", out)
	}
	// The reserve never shrinks a partition that already reaches into it.
	again, err := Grow(p, size, 512, Options{Reserve: 100 << 20})
	if err != nil || again.Grow || again.Moved {
		t.Errorf("second grow: %+v, %v", again, err)
	}
	if _, err := Grow(p, size, 512, Options{Reserve: size}); err == nil {
		t.Error("a reserve of the whole disk was accepted")
	}
}

func TestGrowLimit(t *testing.T) {
	cases := []struct {
		lastUsable uint64
		size       int64
		lbs        int
		reserve    int64
		want       uint64
	}{
		{1000, 1 << 30, 512, 0, 1000},
		{(1<<30)/512 - 34, 1 << 30, 512, 65 << 20, (1<<30-65<<20)/512 - 1},
		{(1<<30)/4096 - 6, 1 << 30, 4096, 65 << 20, (1<<30-65<<20)/4096 - 1},
		// Not a whole MiB: aligned down.
		{(1<<30 + 4096) / 512, 1<<30 + 4096, 512, 65 << 20, (1<<30-65<<20)/512 - 1},
		{100, 1 << 20, 512, 1 << 20, 0},
	}
	for _, c := range cases {
		if got := growLimit(c.lastUsable, c.size, c.lbs, c.reserve); got != c.want {
			t.Errorf("growLimit(%d, %d, %d, %d) = %d, want %d", c.lastUsable, c.size, c.lbs, c.reserve, got, c.want)
		}
	}
}
