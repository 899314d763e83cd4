package fatfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
)

func TestGeometryCheck(t *testing.T) {
	cases := []struct {
		name string
		g    Geometry
		ok   bool
	}{
		// 64 MiB, 512-byte sectors, 1 sector per cluster. With 1008 FAT
		// sectors, 129024 clusters remain but the FAT maps 129022 (the
		// go-diskfs v1.9.4 case); with 1009, 129022 clusters and room
		// for 129150.
		{"fits", Geometry{512, 1, 32, 2, 131072, 1009}, true},
		{"two entries short", Geometry{512, 1, 32, 2, 131072, 1008}, false},
		{"zero cluster size", Geometry{512, 0, 32, 2, 131072, 1008}, false},
		{"FATs fill the volume", Geometry{512, 1, 32, 2, 2000, 1000}, false},
	}
	for _, c := range cases {
		if err := c.g.Check(); (err == nil) != c.ok {
			t.Errorf("%s: Check() = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestCreateMakesAVolumeFsckAccepts(t *testing.T) {
	for _, size := range []int64{64 << 20, 65<<20 + 512*7, 300 << 20} {
		p := filepath.Join(t.TempDir(), "fat.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		const start = 1 << 20
		if err := f.Truncate(start + size); err != nil {
			t.Fatal(err)
		}
		if _, err := Create(file.New(f, false), size, start, 512, "TESTVOL", false); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		bs := make([]byte, 512)
		if _, err := f.ReadAt(bs, start); err != nil {
			t.Fatal(err)
		}
		g, err := ParseGeometry(bs)
		if err != nil || g.Check() != nil {
			t.Errorf("%d bytes: geometry %+v: %v %v", size, g, err, g.Check())
		}
		f.Close()
		if _, err := exec.LookPath("fsck.vfat"); err != nil {
			continue
		}
		vol := filepath.Join(t.TempDir(), "vol.img")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vol, b[start:], 0o600); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("fsck.vfat", "-n", vol).CombinedOutput()
		if strings.Contains(string(out), "clusters but only space for") || !strings.Contains(string(out), " files, ") {
			t.Errorf("%d bytes: fsck.vfat:\n%s", size, out)
		}
	}
}

func TestGeometryCheckFAT32Rules(t *testing.T) {
	ok := Geometry{BytesPerSector: 512, SectorsPerCluster: 1, Reserved: 32, FATs: 2, TotalSectors: 81920, FATSectors: 630}
	tests := []struct {
		name string
		g    Geometry
		ok   bool
	}{
		{"fits", ok, true},
		{"FAT two entries short", Geometry{BytesPerSector: 512, SectorsPerCluster: 1, Reserved: 32, FATs: 2, TotalSectors: 81920, FATSectors: 600}, false},
		{"too few clusters for FAT32", Geometry{BytesPerSector: 512, SectorsPerCluster: 1, Reserved: 32, FATs: 2, TotalSectors: 40960, FATSectors: 320}, false},
		{"FATs fill the volume", Geometry{BytesPerSector: 512, SectorsPerCluster: 1, Reserved: 32, FATs: 2, TotalSectors: 1000, FATSectors: 600}, false},
		{"zero fields", Geometry{}, false},
	}
	for _, tc := range tests {
		if err := tc.g.Check(); (err == nil) != tc.ok {
			t.Errorf("%s: Check() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
