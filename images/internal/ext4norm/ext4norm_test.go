package ext4norm

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/google/uuid"
)

// makeExt4 writes an ext4 of size bytes at offset 1 MiB of a new image
// with go-diskfs, a directory and two files in it.
func makeExt4(t *testing.T, size int64, features ...ext4.FeatureOpt) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "ext4.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size + 1<<20); err != nil {
		t.Fatal(err)
	}
	u := uuid.MustParse("7d3c8f4e-0b7a-4a8e-9f5c-2f0b1f4a9e11")
	fsys, err := ext4.Create(file.New(f, false), size, 1<<20, 512, &ext4.Params{UUID: &u, VolumeName: "test", Features: features})
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Mkdir("etc"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"etc/os-release", "etc/hostname"} {
		w, err := fsys.OpenFile(n, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("contents of " + n + "\n")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	return img
}

func normalize(t *testing.T, img string, epoch time.Time, seed [16]byte) (Stats, error) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Normalize(f, 1<<20, epoch, seed)
}

// TestNormalizeReproducible builds the same filesystem twice (go-diskfs
// stamps it with the clock and a random hash seed each time), normalizes
// both, and wants identical bytes that e2fsck accepts and that read back
// with the epoch as their times. 48 MiB has backup superblocks in groups 1
// and 3 (1 KiB blocks, 8192 blocks a group).
func TestNormalizeReproducible(t *testing.T) {
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	seed := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	a, b := makeExt4(t, 48<<20), makeExt4(t, 48<<20)
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if bytes.Equal(ab, bb) {
		t.Fatal("go-diskfs made identical filesystems: the normalization is no longer needed")
	}
	for _, img := range []string{a, b} {
		st, err := normalize(t, img, epoch, seed)
		if err != nil {
			t.Fatal(err)
		}
		if st.Superblocks < 3 || st.Inodes < 5 {
			t.Errorf("normalized %d superblocks and %d inodes, want at least 3 and 5", st.Superblocks, st.Inodes)
		}
	}
	ab, _ = os.ReadFile(a)
	bb, _ = os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("normalized filesystems differ")
	}
	// Idempotent: the checksums written verify on a second pass.
	if _, err := normalize(t, a, epoch, seed); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if _, err := exec.LookPath("e2fsck"); err == nil {
		if out, err := exec.Command("e2fsck", "-fn", a+"?offset=1048576").CombinedOutput(); err != nil {
			t.Fatalf("e2fsck -fn: %v\n%s", err, out)
		}
	}
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := ext4.Read(file.New(f, true), 48<<20, 1<<20, 512)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := fsys.Stat("etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(epoch) {
		t.Errorf("etc/os-release mtime %s, want %s", fi.ModTime(), epoch)
	}
}

func TestNormalizeRefusesMetadataCsum(t *testing.T) {
	img := makeExt4(t, 16<<20, ext4.WithFeatureMetadataChecksums(true))
	if _, err := normalize(t, img, time.Unix(0, 0), [16]byte{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Normalize on metadata_csum: %v, want ErrUnsupported", err)
	}
}

func TestNormalizeRefusesNonExt4(t *testing.T) {
	img := filepath.Join(t.TempDir(), "zero.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := normalize(t, img, time.Unix(0, 0), [16]byte{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Normalize on zeroes: %v, want ErrUnsupported", err)
	}
}

func TestSparseGroup(t *testing.T) {
	var got []int64
	for g := int64(0); g < 100; g++ {
		if sparseGroup(g) {
			got = append(got, g)
		}
	}
	want := []int64{0, 1, 3, 5, 7, 9, 25, 27, 49, 81}
	if !equal(got, want) {
		t.Errorf("sparse_super groups below 100: %v, want %v", got, want)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEncodeTime(t *testing.T) {
	tests := []struct {
		in        time.Time
		lo, extra uint32
	}{
		{time.Unix(1735689600, 0), 1735689600, 0},
		{time.Unix(1735689600, 250), 1735689600, 250 << 2},
		{time.Unix(1<<31, 0), 1 << 31, 1}, // 2038: past int32, epoch bit 1
		{time.Unix(-1, 0), 0xFFFFFFFF, 0}, // 1969: negative, epoch bits 0
		{time.Unix(1<<32+5, 0), 5, 1},     // 2106
		{time.Unix(3<<31, 0), 1 << 31, 2}, // 2174
	}
	for _, tc := range tests {
		lo, extra := encodeTime(tc.in)
		if lo != tc.lo || extra != tc.extra {
			t.Errorf("encodeTime(%d) = %#x, %#x; want %#x, %#x", tc.in.Unix(), lo, extra, tc.lo, tc.extra)
		}
	}
}

func TestCRC32C(t *testing.T) {
	// RFC 3720 B.4: CRC32C of 32 bytes of zeroes is 0x8a9136aa (with the
	// usual inversions, which the kernel's crc32c_le leaves to callers).
	if got := ^crc32c(^uint32(0), make([]byte, 32)); got != 0x8a9136aa {
		t.Errorf("crc32c(zeroes) = %#x, want 0x8a9136aa", got)
	}
}
