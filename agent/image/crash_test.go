package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/blockdev"
	"github.com/anvil-metal/anvil/agent/image/growpart"
	"github.com/anvil-metal/anvil/agent/image/rootfs"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// crashChildEnv makes the test binary an installer that is killed
// mid-stream (see crashChild).
const crashChildEnv = "ANVIL_IMAGE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		if err := crashChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild installs the image file onto the target from
// "target|image|n|raw" or "...|tar": the source serves the image's first
// n bytes, then says "cut" on stdout and hangs until the parent kills the
// process.
func crashChild(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("crash child: spec %q is not target|image|n|raw-or-tar", spec)
	}
	f, o := anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Options{}
	if parts[3] == "tar" {
		f, o.Tar = anvilv1.ImageFormat_IMAGE_FORMAT_TAR, rootfs.Installer(rootfs.Options{Layout: rootfs.Layout{ESPSize: 64 << 20}})
	}
	img, err := os.ReadFile(parts[1])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		return fmt.Errorf("crash child: %w", err)
	}
	src := func(context.Context, string) (io.ReadCloser, int64, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(img[:n]), hangReader{})), int64(len(img)), nil
	}
	o.Source = src
	_, err = Install(context.Background(), Request{URL: "mem://image", Checksum: sum256(img), Format: f, Target: parts[0]}, o)
	return fmt.Errorf("crash child: install returned (%v) instead of hanging", err)
}

// hangReader says "cut" once the source ran dry, then blocks forever.
type hangReader struct{}

func (hangReader) Read([]byte) (int, error) {
	fmt.Println("cut")
	select {}
}

// noPartitionTable fails unless the disk has neither a GPT (the project's
// reader, which also tries the backup at the disk's end) nor an MBR boot
// signature, and blkid -p finds no partition table either.
func noPartitionTable(t *testing.T, dev string) {
	t.Helper()
	d, err := blockdev.Open(dev, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	d.FlushBuffers() // reads below go through the page cache
	d.Close()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if tbl, err := gpt.Read(f, 512, 512); err == nil {
		t.Errorf("a GPT is on the disk (%d partitions, recovered from backup: %v)", len(tbl.Partitions), tbl.RecoveredFromBackup)
	}
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if mbr[510] == 0x55 && mbr[511] == 0xaa {
		t.Error("an MBR boot signature is on the disk")
	}
	out, err := exec.Command("blkid", "-p", dev).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("blkid -p %s found something (%v): %s", dev, err, out)
	}
}

// hasPartitionTable checks the test's detectors see a valid table.
func hasPartitionTable(t *testing.T, dev string) {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := gpt.Read(f, 512, 512); err != nil {
		t.Fatalf("no GPT after a good install: %v", err)
	}
	if out, err := exec.Command("blkid", "-p", dev).CombinedOutput(); err != nil || !strings.Contains(string(out), `PTTYPE="gpt"`) {
		t.Fatalf("blkid -p after a good install: %v: %s", err, out)
	}
}

// previousInstall leaves the disk as an earlier successful install does:
// an image with its GPT grown to the disk (primary and backup tables).
func previousInstall(t *testing.T, dev string) {
	t.Helper()
	img := gptImage(t)
	copy(img[2<<20:], "previous install")
	if _, err := Install(context.Background(), Request{URL: "mem://old", Checksum: sum256(img), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Target: dev},
		Options{Source: memSource(img)}); err != nil {
		t.Fatal(err)
	}
	hasPartitionTable(t, dev)
}

// TestInstallKilledMidStreamLeavesNoPartitionTable is the crash (an OOM
// kill; a power cut loses at most more of the writes) at points of the
// stream: the installing process is SIGKILLed, so no cleanup runs.
// Whatever reached the disk, neither the image's GPT nor the previous
// install's is left on it.
func TestInstallKilledMidStreamLeavesNoPartitionTable(t *testing.T) {
	img := gptImage(t)
	imgPath := filepath.Join(t.TempDir(), "image.raw")
	if err := os.WriteFile(imgPath, img, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4096, 1<<20 - 512, 1<<20 + 4096, 5 << 20, len(img) - 4096, len(img)} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dev := loopdev.New(t, 32<<20)
			previousInstall(t, dev)
			killMidStream(t, dev, imgPath, n, "raw", func() {})
			noPartitionTable(t, dev)
		})
	}
}

// killMidStream runs an install in a child process whose source gives
// the image's first n bytes, waits for the cut and then for settled (the
// install progressed as far as it can), and SIGKILLs it.
func killMidStream(t *testing.T, dev, imgPath string, n int, kind string, settled func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dev+"|"+imgPath+"|"+strconv.Itoa(n)+"|"+kind)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "cut\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q, %v; stderr: %s", line, err, stderr.Bytes())
	}
	// Let everything the child got so far reach the disk.
	settled()
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the child exited by itself; stderr: %s", stderr.Bytes())
	}
}

// TestTarInstallKilledMidStreamLeavesNoPartitionTable: a rootfs install
// killed while extracting, or after extracting but before the digest
// check, leaves no GPT and no MBR boot code (the old installer wrote the
// GPT first, so both rows failed).
func TestTarInstallKilledMidStreamLeavesNoPartitionTable(t *testing.T) {
	arc := rootfsTar(t)
	imgPath := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(imgPath, arc, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{len(arc) / 2, len(arc)} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dev := loopdev.New(t, 1<<30)
			previousInstall(t, dev)
			killMidStream(t, dev, imgPath, n, "tar", func() { waitForESP(t, dev) })
			noPartitionTable(t, dev)
		})
	}
}

// waitForESP waits until the FAT32 boot sector of the ESP (at 1 MiB) is
// on the disk: the install got past making its filesystems.
func waitForESP(t *testing.T, dev string) {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := f.ReadAt(b, 1<<20); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(b[82:87], []byte("FAT32")) {
			return
		}
	}
	t.Fatal("the ESP was not made within 20 s")
}

// TestInstallCancelledMidStreamLeavesNoPartitionTable: the context ends
// after n bytes of the source; Install fails and no table is left.
func TestInstallCancelledMidStreamLeavesNoPartitionTable(t *testing.T) {
	img := gptImage(t)
	for _, n := range []int{4096, 1<<20 + 4096, 5 << 20, len(img)} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dev := loopdev.New(t, 32<<20)
			previousInstall(t, dev)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src := func(context.Context, string) (io.ReadCloser, int64, error) {
				return io.NopCloser(io.MultiReader(bytes.NewReader(img[:n]), cancelReader{cancel})), int64(len(img)), nil
			}
			_, err := Install(ctx, Request{URL: "mem://image", Checksum: sum256(img), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Target: dev},
				Options{Source: src})
			if err == nil {
				t.Fatal("install succeeded")
			}
			noPartitionTable(t, dev)
		})
	}
}

// cancelReader cancels the install's context and fails the read.
type cancelReader struct{ cancel context.CancelFunc }

func (c cancelReader) Read([]byte) (int, error) {
	c.cancel()
	return 0, context.Canceled
}

// TestInstallChecksumMismatchOverAPreviousInstall: the whole image
// arrives but its digest differs; nothing of either table survives.
func TestInstallChecksumMismatchOverAPreviousInstall(t *testing.T) {
	img := gptImage(t)
	dev := loopdev.New(t, 32<<20)
	previousInstall(t, dev)
	_, err := Install(context.Background(), Request{URL: "mem://image", Checksum: sum256(append(bytes.Clone(img), 0)), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Target: dev},
		Options{Source: memSource(img)})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	noPartitionTable(t, dev)
}

// TestInstallIsByteIdentical: a verified image whose table needs no
// fitting (its last partition cannot grow, the disk is its size) is on
// the disk byte for byte, held-back head and tail included.
func TestInstallIsByteIdentical(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	d, err := diskfs.Create(p, 12<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 20000, Type: gpt.LinuxSwap, Name: "swap"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2 << 20; i < 10<<20; i += 4099 {
		img[i] = byte(i)
	}
	for _, zeroed := range []bool{false, true} {
		var dev string
		if zeroed {
			dev = loopdev.New(t, int64(len(img)))
		} else {
			dev = dirtyDisk(t, int64(len(img)))
		}
		res, err := Install(context.Background(), Request{URL: "mem://image", Checksum: sum256(img), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Target: dev, Zeroed: zeroed},
			Options{Source: memSource(img)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Grow.Moved || res.Grow.Grow {
			t.Fatalf("the table was changed after the write: %+v", res.Grow)
		}
		if got := head(t, dev, len(img)); !bytes.Equal(got, img) {
			t.Fatalf("zeroed=%v: the disk differs from the image", zeroed)
		}
		if res.Written+res.Skipped != int64(len(img)) {
			t.Errorf("zeroed=%v: written %d + skipped %d, image %d bytes", zeroed, res.Written, res.Skipped, len(img))
		}
		hasPartitionTable(t, dev)
	}
}

// TestInstallOfAnImageWithADamagedGPTFails: the digest matches, but the
// image's primary GPT header fails its CRC; the install fails with
// growpart.ErrUnreadableGPT (it used to pass as "no GPT") and leaves no
// table.
func TestInstallOfAnImageWithADamagedGPTFails(t *testing.T) {
	img := gptImage(t)
	img[512+56] ^= 0xff // disk GUID; the header CRC no longer matches
	dev := loopdev.New(t, 32<<20)
	_, err := Install(context.Background(), Request{URL: "mem://image", Checksum: sum256(img), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Target: dev},
		Options{Source: memSource(img)})
	if !errors.Is(err, growpart.ErrUnreadableGPT) {
		t.Fatalf("err = %v, want growpart.ErrUnreadableGPT", err)
	}
	noPartitionTable(t, dev)
}
