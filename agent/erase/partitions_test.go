package erase

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// image is a sparse disk image of size bytes partitioned by sfdisk with
// script.
func image(t testing.TB, size int64, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if script != "" {
		cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", p)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v: %s", err, out)
		}
	}
	return p
}

func readParts(t *testing.T, p string) ([]Partition, error) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return ReadPartitions(f, st.Size(), 512)
}

func patch(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

const sector = 512

func TestReadPartitions(t *testing.T) {
	const size = 64 << 20
	gptScript := "label: gpt\nstart=2048, size=4096\nstart=8192, size=20480\nstart=40000, size=1000\n"
	gptWant := []Partition{{2048 * sector, 4096 * sector}, {8192 * sector, 20480 * sector}, {40000 * sector, 1000 * sector}}
	// Two primaries, an extended partition holding two logical ones.
	dosScript := "label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=40960, type=5\nstart=10240, size=4096, type=83\nstart=20480, size=8192, type=82\n"
	dosWant := []Partition{{2048 * sector, 4096 * sector}, {10240 * sector, 4096 * sector}, {20480 * sector, 8192 * sector}}

	t.Run("GPT", func(t *testing.T) {
		got, err := readParts(t, image(t, size, gptScript))
		if err != nil || !reflect.DeepEqual(got, gptWant) {
			t.Fatalf("%v, %v; want %v", got, err, gptWant)
		}
	})
	t.Run("GPT, primary header destroyed: the backup", func(t *testing.T) {
		p := image(t, size, gptScript)
		patch(t, p, sector, make([]byte, sector))
		got, err := readParts(t, p)
		if err != nil || !reflect.DeepEqual(got, gptWant) {
			t.Fatalf("%v, %v; want %v", got, err, gptWant)
		}
	})
	t.Run("GPT, only the backup left (LBA 0 and 1 zeroed)", func(t *testing.T) {
		p := image(t, size, gptScript)
		patch(t, p, 0, make([]byte, 2*sector))
		got, err := readParts(t, p)
		if err != nil || !reflect.DeepEqual(got, gptWant) {
			t.Fatalf("%v, %v; want %v", got, err, gptWant)
		}
	})
	t.Run("GPT, both headers destroyed behind a protective MBR", func(t *testing.T) {
		p := image(t, size, gptScript)
		patch(t, p, sector, []byte("EFI PART garbage"))
		patch(t, p, size-sector, make([]byte, sector))
		if got, err := readParts(t, p); !errors.Is(err, ErrPartitionTable) {
			t.Fatalf("%v, %v; want ErrPartitionTable", got, err)
		}
	})
	t.Run("MBR with logical partitions", func(t *testing.T) {
		got, err := readParts(t, image(t, size, dosScript))
		if err != nil || !reflect.DeepEqual(got, dosWant) {
			t.Fatalf("%v, %v; want %v", got, err, dosWant)
		}
	})
	t.Run("MBR partition past the end", func(t *testing.T) {
		p := image(t, size, dosScript)
		patch(t, p, 446+12, []byte{0xff, 0xff, 0xff, 0x00}) // first entry's size
		if got, err := readParts(t, p); !errors.Is(err, ErrPartitionTable) {
			t.Fatalf("%v, %v; want ErrPartitionTable", got, err)
		}
	})
	t.Run("extended chain that loops", func(t *testing.T) {
		p := image(t, size, dosScript)
		// The second EBR (at 20480-2048... as sfdisk placed it) is found
		// through the first one's link; point the first EBR's link at the
		// extended partition's own start.
		patch(t, p, 8192*sector+446+16+8, []byte{0, 0, 0, 0})
		patch(t, p, 8192*sector+446+16+4, []byte{0x05})
		patch(t, p, 8192*sector+446+16+8, []byte{0, 0, 0, 0})
		got, err := readParts(t, p)
		// A link of 0 ends the chain: only the first logical partition.
		if err != nil || len(got) != 2 {
			t.Fatalf("link 0: %v, %v", got, err)
		}
		patch(t, p, 8192*sector+446+16+8, []byte{0x01, 0, 0, 0}) // EBR at ext+1 sector: no 55AA there
		if _, err := readParts(t, p); !errors.Is(err, ErrPartitionTable) {
			t.Fatalf("link into nothing: %v; want ErrPartitionTable", err)
		}
		// An EBR that links to itself.
		ebr := make([]byte, sector)
		ebr[446+16+4] = 0x05
		ebr[446+16+8] = 0x01 // relative to the extended start: itself
		ebr[510], ebr[511] = 0x55, 0xaa
		patch(t, p, 8193*sector, ebr)
		if _, err := readParts(t, p); !errors.Is(err, ErrPartitionTable) || !strings.Contains(err.Error(), "loops") {
			t.Fatalf("self link: %v; want a loop error", err)
		}
	})
	t.Run("blank device", func(t *testing.T) {
		if got, err := readParts(t, image(t, size, "")); err != nil || got != nil {
			t.Fatalf("%v, %v", got, err)
		}
	})
	t.Run("a boot sector is no partition table", func(t *testing.T) {
		p := image(t, size, "")
		b := make([]byte, sector)
		copy(b, "\xeb\x3c\x90mkfs.fat")
		b[446] = 0x12 // boot code where the entries would be
		b[510], b[511] = 0x55, 0xaa
		patch(t, p, 0, b)
		if got, err := readParts(t, p); err != nil || got != nil {
			t.Fatalf("%v, %v", got, err)
		}
	})
}

func FuzzReadPartitions(f *testing.F) {
	for _, script := range []string{
		"label: gpt\nstart=34, size=30\nstart=70, size=20\n",
		"label: dos\nstart=1, size=20, type=83\nstart=30, size=80, type=5\nstart=32, size=10, type=83\nstart=50, size=10, type=83\n",
	} {
		p := image(f, 128*sector, script) // small: the fuzzer slows down on large inputs
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		size := int64(len(b))
		parts, err := ReadPartitions(bytes.NewReader(b), size, 512)
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.Off < 0 || p.Len <= 0 || p.Off+p.Len > size {
				t.Fatalf("partition %+v outside the %d-byte image", p, size)
			}
		}
	})
}
