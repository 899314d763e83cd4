package diskimg

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
)

func TestDOSTime(t *testing.T) {
	tests := []struct {
		in        time.Time
		tm, dt    uint16
		tenth     uint8
		wantClamp bool
	}{
		{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), 0, 45<<9 | 1<<5 | 1, 0, false},
		{time.Date(2001, 9, 9, 1, 46, 41, 500_000_000, time.UTC), 1<<11 | 46<<5 | 20, 21<<9 | 9<<5 | 9, 150, false},
		{time.Unix(0, 0), 0, 0<<9 | 1<<5 | 1, 0, true},
	}
	for _, tc := range tests {
		tm, dt, tenth := dosTime(tc.in)
		if tm != tc.tm || dt != tc.dt || tenth != tc.tenth {
			t.Errorf("dosTime(%s) = %#x %#x %d, want %#x %#x %d", tc.in, tm, dt, tenth, tc.tm, tc.dt, tc.tenth)
		}
	}
}

// TestMakeFAT32 makes volumes of several sizes (33 MiB is FAT32's
// smallest; go-diskfs v1.9.4 sizes the FAT of 64 MiB two entries short,
// so MakeFAT32 must shrink it) with files
// in the root and in a directory, finishes them, and has dosfstools check
// them: no complaint at all. The same inputs give the same bytes.
func TestMakeFAT32(t *testing.T) {
	stamp := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, size := range []int64{33 << 20, 40 << 20, 64 << 20} {
		var sums [2][]byte
		for i := range sums {
			img := filepath.Join(t.TempDir(), "fat.img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(size + 1<<20); err != nil {
				t.Fatal(err)
			}
			store := file.New(f, false)
			fsys, err := MakeFAT32(store, size, 1<<20, 512, "TEST-VOL", true)
			if err != nil {
				t.Fatalf("%d MiB: %v", size>>20, err)
			}
			for _, n := range []string{"a.txt", "dir/b.json", "dir/sub/c"} {
				if err := WriteFile(fsys, n, []byte("content of "+n)); err != nil {
					t.Fatal(err)
				}
				if err := fsys.Chtimes(n, stamp, stamp, stamp); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range []string{"dir", "dir/.", "dir/..", "dir/sub", "dir/sub/.", "dir/sub/.."} {
				if err := fsys.Chtimes(n, stamp, stamp, stamp); err != nil {
					t.Fatalf("chtimes %s: %v", n, err)
				}
			}
			if err := FinishFAT32(store, 1<<20, stamp); err != nil {
				t.Fatalf("%d MiB: %v", size>>20, err)
			}
			b, err := fsys.ReadFile("dir/b.json")
			if err != nil || string(b) != "content of dir/b.json" {
				t.Fatalf("read back dir/b.json: %q, %v", b, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				fsckFAT(t, img, 1<<20, size)
			}
			data, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			sums[i] = data
		}
		if !bytes.Equal(sums[0], sums[1]) {
			t.Errorf("%d MiB: two builds from the same inputs differ", size>>20)
		}
	}
}

// fsckFAT runs fsck.vfat -n on [off, off+size) of img, copied out.
func fsckFAT(t *testing.T, img string, off, size int64) {
	t.Helper()
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		t.Fatalf("fsck.vfat not found (hack/install-deps.sh installs dosfstools): %v", err)
	}
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	b := make([]byte, size)
	if _, err := src.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(t.TempDir(), "part.img")
	if err := os.WriteFile(part, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.vfat -n: %v\n%s", err, out)
	}
	if lines := bytes.Count(bytes.TrimSpace(out), []byte("\n")) + 1; lines != 2 {
		t.Fatalf("fsck.vfat -n reported something:\n%s", out)
	}
}
