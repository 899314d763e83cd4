package erase

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/test/loopdev"
)

// fill writes random data over the whole device.
func fill(t *testing.T, path string, size int64) []byte {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestQuickOnLoopDevice(t *testing.T) {
	const size = 80 << 20 // past the 64 MiB btrfs mirror
	dev := loopdev.New(t, size)
	before := fill(t, dev, size)
	res, err := Quick(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	rs := QuickRegions(size, 4096)
	if res.Bytes != Total(rs) {
		t.Errorf("Result.Bytes = %d, want %d", res.Bytes, Total(rs))
	}
	after, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	var cleared int64
	for _, r := range rs {
		if i := firstNonZero(after[r.Off : r.Off+r.Len]); i >= 0 {
			t.Errorf("byte %d of region %v not zero", r.Off+int64(i), r)
		}
		cleared += r.Len
	}
	// Outside the regions the data is untouched: a quick erase is quick.
	prev := int64(0)
	for _, r := range append(rs, Region{size, 0}) {
		if !bytes.Equal(after[prev:r.Off], before[prev:r.Off]) {
			t.Errorf("quick erase changed data in [%d,%d), outside its regions", prev, r.Off)
		}
		prev = r.Off + r.Len
	}
}

func TestVerifyCatchesSkippedErase(t *testing.T) {
	const size = 4 << 20
	dev := loopdev.New(t, size)
	fill(t, dev, size)
	err := Verify(dev, QuickRegions(size, 4096))
	if err == nil || !strings.Contains(err.Error(), "not zero") {
		t.Fatalf("Verify on an unerased device = %v, want a not-zero error", err)
	}
}

func TestQuickRefusesMissingDevice(t *testing.T) {
	if _, err := Quick(context.Background(), "/dev/does-not-exist-anvil"); err == nil {
		t.Fatal("Quick on a missing device succeeded")
	}
}
