package growpart

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/test/loopdev"
)

func TestPresent(t *testing.T) {
	mbr := func(typ byte) []byte {
		b := make([]byte, 8192)
		b[510], b[511] = 0x55, 0xaa
		b[446+16+4] = typ // second record
		return b
	}
	sig := func(off int) []byte {
		b := make([]byte, 8192)
		copy(b[off:], "EFI PART")
		return b
	}
	for _, c := range []struct {
		name string
		head []byte
		want bool
	}{
		{"zeroes", make([]byte, 8192), false},
		{"DOS MBR (0x83)", mbr(0x83), false},
		{"protective MBR", mbr(0xee), true},
		{"0xEE record without boot signature", func() []byte { b := mbr(0xee); b[511] = 0; return b }(), false},
		{"header at LBA 1 (512)", sig(512), true},
		{"header at LBA 1 (4096)", sig(4096), true},
		{"signature elsewhere", sig(1024), false},
		{"signature cut short", sig(512)[:515], false},
	} {
		if got := Present(c.head); got != c.want {
			t.Errorf("%s: Present = %v, want %v", c.name, got, c.want)
		}
	}
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTable(t *testing.T, path string) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = ReadTable(f, 512)
	return err
}

// TestReadTableTellsNoGPTFromUnreadable: only a disk with positively no
// GPT is ErrNoGPT; a damaged or truncated one is ErrUnreadableGPT (and
// Grow fails on it, leaving it untouched). The old Grow called all of
// these "no GPT" and succeeded.
func TestReadTableTellsNoGPTFromUnreadable(t *testing.T) {
	img := smallImage(t, gpt.LinuxRootX86_64) // 16 MiB, backup at its end
	headerCRC := bytes.Clone(img)
	headerCRC[512+56] ^= 0xff // disk GUID, header CRC32 unchanged
	entriesCRC := bytes.Clone(img)
	entriesCRC[1024+32] ^= 0xff // entry 1's partition GUID
	dosMBR := make([]byte, 1<<20)
	dosMBR[510], dosMBR[511], dosMBR[446+4] = 0x55, 0xaa, 0x83
	grown := func(b []byte) []byte { return append(bytes.Clone(b), make([]byte, 16<<20)...) }

	for _, c := range []struct {
		name string
		disk []byte
		want error
	}{
		{"zeroes", make([]byte, 1<<20), ErrNoGPT},
		{"DOS MBR", dosMBR, ErrNoGPT},
		{"valid", img, nil},
		// The image on a bigger disk: no backup at the disk's end.
		{"header CRC, no backup", grown(headerCRC), ErrUnreadableGPT},
		// The image as large as the disk: the backup verifies, the
		// primary still does not.
		{"header CRC, valid backup", headerCRC, ErrUnreadableGPT},
		{"entries CRC", grown(entriesCRC), ErrUnreadableGPT},
		{"truncated in the entry array", img[:8192], ErrUnreadableGPT},
		{"truncated in LBA 1", img[:700], ErrUnreadableGPT},
		{"truncated in LBA 0", img[:300], ErrUnreadableGPT},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.disk)
			err := readTable(t, path)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("ReadTable: %v, want %v", err, c.want)
			}
			res, err := Grow(path, int64(len(c.disk)), 512, Options{})
			switch {
			case c.want == ErrNoGPT && (err != nil || res.GPT):
				t.Errorf("Grow on a disk without GPT: %+v, %v; want a no-op", res, err)
			case c.want == ErrUnreadableGPT && !errors.Is(err, ErrUnreadableGPT):
				t.Errorf("Grow on a damaged GPT: %+v, %v; want ErrUnreadableGPT", res, err)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, c.disk) {
				t.Errorf("Grow changed the disk (%v)", err)
			}
		})
	}
}

// TestReadTableOnATruncatedLoopDevice: a real block device that ends
// inside the partition entry array reads short.
func TestReadTableOnATruncatedLoopDevice(t *testing.T) {
	img := smallImage(t, gpt.LinuxRootX86_64)
	dev := loopdev.New(t, 8192)
	if err := os.WriteFile(dev, img[:8192], 0); err != nil {
		t.Fatal(err)
	}
	if err := readTable(t, dev); !errors.Is(err, ErrUnreadableGPT) {
		t.Fatalf("ReadTable: %v, want ErrUnreadableGPT", err)
	}
	if _, err := Grow(dev, 8192, 512, Options{}); !errors.Is(err, ErrUnreadableGPT) {
		t.Fatalf("Grow: %v, want ErrUnreadableGPT", err)
	}
}
