package disks

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
)

const gptDiskSize = 8 << 20

// writeGPT partitions the disk image at p with go-diskfs: one partition
// per name.
func writeGPT(t *testing.T, p string, names ...string) {
	t.Helper()
	d, err := diskfs.Open(p)
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
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func gptDisk(t *testing.T, names ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(p, gptDiskSize, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	writeGPT(t, p, names...)
	return p
}

// patch writes b at off into the file or device at p.
func patch(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Offsets in a 512-byte-sector GPT disk of gptDiskSize bytes.
const (
	primaryHeader  = 512
	primaryEntries = 1024
	backupHeader   = gptDiskSize - 512
	backupEntries  = gptDiskSize - 512 - 128*128
)

// corruptHeader changes the disk GUID of a GPT header, so that its CRC
// no longer matches.
func corruptHeader(t *testing.T, p string, off int64) {
	t.Helper()
	patch(t, p, off+56, []byte{0xde, 0xad, 0xbe, 0xef})
}

func TestCheckProtected(t *testing.T) {
	plain := gptDisk(t, "root", "data")
	marked := gptDisk(t, "root", "Anvil-Protected")
	blank := filepath.Join(t.TempDir(), "blank.img")
	if d, err := diskfs.Create(blank, 1<<20, diskfs.SectorSizeDefault); err != nil {
		t.Fatal(err)
	} else if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtected(plain, DefaultProtectLabel); err != nil {
		t.Errorf("unmarked disk: %v", err)
	}
	if err := CheckProtected(blank, DefaultProtectLabel); err != nil {
		t.Errorf("disk without GPT: %v", err)
	}
	if err := CheckProtected(marked, DefaultProtectLabel); !errors.Is(err, ErrProtected) || !strings.Contains(err.Error(), marked) {
		t.Errorf("marked disk: err = %v, want ErrProtected naming %s", err, marked)
	}
	if err := CheckProtected(marked, ""); err != nil {
		t.Errorf("check disabled: %v", err)
	}
	if err := CheckProtected(filepath.Join(t.TempDir(), "missing"), DefaultProtectLabel); err == nil || errors.Is(err, ErrProtected) {
		t.Errorf("missing disk: err = %v, want an open error", err)
	}
}

// TestCheckProtectedBackup: a primary GPT that fails its CRC is read from
// the backup, which still tells whether the disk is protected.
func TestCheckProtectedBackup(t *testing.T) {
	plain, marked := gptDisk(t, "root"), gptDisk(t, "root", "anvil-protected")
	for _, p := range []string{plain, marked} {
		corruptHeader(t, p, primaryHeader)
	}
	if err := CheckProtected(plain, DefaultProtectLabel); err != nil {
		t.Errorf("unmarked disk, primary GPT corrupt: %v", err)
	}
	if err := CheckProtected(marked, DefaultProtectLabel); !errors.Is(err, ErrProtected) {
		t.Errorf("marked disk, primary GPT corrupt: err = %v, want ErrProtected", err)
	}
	// The primary wiped (signature gone), the backup left: still read.
	wiped := gptDisk(t, "anvil-protected")
	patch(t, wiped, 0, make([]byte, 34*512))
	if err := CheckProtected(wiped, DefaultProtectLabel); !errors.Is(err, ErrProtected) {
		t.Errorf("marked disk, primary GPT zeroed: err = %v, want ErrProtected", err)
	}
}

// TestCheckProtectedUnreadable: when the table cannot be read the disk
// might carry the marker, so it is refused, naming the disk and the cause
// (gptread's tests hold every kind of unreadable table).
func TestCheckProtectedUnreadable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, p string)
		cause string
	}{
		{"both headers fail their CRC", func(t *testing.T, p string) {
			corruptHeader(t, p, primaryHeader)
			corruptHeader(t, p, backupHeader)
		}, "Checksum"},
		{"protective MBR without GPT headers", func(t *testing.T, p string) {
			patch(t, p, primaryHeader, make([]byte, 512))
			patch(t, p, backupHeader, make([]byte, 512))
		}, "protective MBR"},
		{"too small for a partition table", func(t *testing.T, p string) {
			if err := os.Truncate(p, 600); err != nil {
				t.Fatal(err)
			}
		}, "too few"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := gptDisk(t, "root")
			tt.setup(t, p)
			err := CheckProtected(p, DefaultProtectLabel)
			if !errors.Is(err, ErrUnreadable) || !errors.Is(err, gptread.ErrUnreadable) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.cause) {
				t.Fatalf("err = %v, want ErrUnreadable naming %s and %q", err, p, tt.cause)
			}
			t.Log(err)
		})
	}
}

// TestCheckProtected4096: an image made with 4096-byte blocks (a loop
// device over it says 512) is read with its own block size.
func TestCheckProtected4096(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk4k.img")
	d, err := diskfs.Create(p, gptDiskSize, diskfs.SectorSize4k)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 4096, PhysicalSectorSize: 4096, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 256, End: 511, Type: gpt.LinuxFilesystem, Name: "anvil-protected"}}}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtected(p, DefaultProtectLabel); !errors.Is(err, ErrProtected) || !strings.Contains(err.Error(), "4096-byte blocks") {
		t.Fatalf("marked 4096-byte disk: err = %v, want ErrProtected", err)
	}
}

// TestCheckProtectedMBR: a disk with MBR partitions only has no GPT, hence
// no marker.
func TestCheckProtectedMBR(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mbr.img")
	mbr := make([]byte, 1<<20)
	mbr[446+4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(mbr[446+8:], 2048)
	binary.LittleEndian.PutUint32(mbr[446+12:], 100)
	mbr[510], mbr[511] = 0x55, 0xAA
	if err := os.WriteFile(p, mbr, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtected(p, DefaultProtectLabel); err != nil {
		t.Errorf("MBR disk: %v", err)
	}
}
