package disks

import (
	"errors"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

func gptDisk(t *testing.T, names ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(p, 8<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for i, n := range names {
		start := uint64(2048 + i*4096)
		tbl.Partitions = append(tbl.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: start + 4095, Type: gpt.LinuxFilesystem, Name: n})
	}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	d.Close()
	return p
}

func TestCheckProtected(t *testing.T) {
	plain := gptDisk(t, "root", "data")
	marked := gptDisk(t, "root", "Anvil-Protected")
	blank := filepath.Join(t.TempDir(), "blank.img")
	if _, err := diskfs.Create(blank, 1<<20, diskfs.SectorSizeDefault); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtected(plain, DefaultProtectLabel); err != nil {
		t.Errorf("unmarked disk: %v", err)
	}
	if err := CheckProtected(blank, DefaultProtectLabel); err != nil {
		t.Errorf("disk without GPT: %v", err)
	}
	if err := CheckProtected(marked, DefaultProtectLabel); !errors.Is(err, ErrProtected) {
		t.Errorf("marked disk: err = %v, want ErrProtected", err)
	}
	if err := CheckProtected(marked, ""); err != nil {
		t.Errorf("check disabled: %v", err)
	}
	if err := CheckProtected(filepath.Join(t.TempDir(), "missing"), DefaultProtectLabel); err == nil || errors.Is(err, ErrProtected) {
		t.Errorf("unreadable disk: err = %v, want a read error", err)
	}
}
