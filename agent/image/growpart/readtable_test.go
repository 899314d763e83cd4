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

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGrowTellsNoGPTFromUnreadable: Grow leaves a disk with positively no
// GPT alone, and fails with ErrUnreadableGPT on a damaged or truncated one
// (a primary only the backup recovers included: Grow rewrites the table),
// leaving it untouched. The old Grow called all of these "no GPT" and
// succeeded. agent/disks/gptread's tests hold every kind of table.
func TestGrowTellsNoGPTFromUnreadable(t *testing.T) {
	img := smallImage(t, gpt.LinuxRootX86_64) // 16 MiB, backup at its end
	headerCRC := bytes.Clone(img)
	headerCRC[512+56] ^= 0xff // disk GUID, header CRC32 unchanged
	dosMBR := make([]byte, 1<<20)
	dosMBR[510], dosMBR[511], dosMBR[446+4] = 0x55, 0xaa, 0x83

	for _, c := range []struct {
		name string
		disk []byte
		want error
	}{
		{"zeroes", make([]byte, 1<<20), ErrNoGPT},
		{"DOS MBR", dosMBR, ErrNoGPT},
		// The image as large as the disk: the backup verifies, the
		// primary still does not.
		{"header CRC, valid backup", headerCRC, ErrUnreadableGPT},
		{"truncated in the entry array", img[:8192], ErrUnreadableGPT},
		{"truncated in LBA 0", img[:300], ErrUnreadableGPT},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.disk)
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

// TestGrowOnATruncatedLoopDevice: a real block device that ends inside
// the partition entry array is ErrUnreadableGPT.
func TestGrowOnATruncatedLoopDevice(t *testing.T) {
	img := smallImage(t, gpt.LinuxRootX86_64)
	dev := loopdev.New(t, 8192)
	if err := os.WriteFile(dev, img[:8192], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Grow(dev, 8192, 512, Options{}); !errors.Is(err, ErrUnreadableGPT) {
		t.Fatalf("Grow: %v, want ErrUnreadableGPT", err)
	}
}
