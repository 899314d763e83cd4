package disks

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// TestAllowlistSymlinksLoop: an allowlist entry given as a symlink (as
// /dev/disk/by-id/... is) matches the device node it points to, from
// either side, and a symlink to another device does not.
func TestAllowlistSymlinksLoop(t *testing.T) {
	a, b := loopdev.New(t, 1<<20), loopdev.New(t, 1<<20)
	dir := t.TempDir()
	byIDA, byIDB, chain := filepath.Join(dir, "wwn-a"), filepath.Join(dir, "wwn-b"), filepath.Join(dir, "chain-a")
	for link, target := range map[string]string{byIDA: a, byIDB: b, chain: byIDA} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	al, err := NewAllowlist([]string{byIDA})
	if err != nil {
		t.Fatal(err)
	}
	if got := al.Paths(); len(got) != 1 || got[0] != a {
		t.Fatalf("allowlist = %v, want [%s]", got, a)
	}
	for p, want := range map[string]bool{a: true, byIDA: true, chain: true, b: false, byIDB: false} {
		if got := al.Allows(p); got != want {
			t.Errorf("Allows(%s) = %v, want %v", p, got, want)
		}
	}

	inv := &anvilv1.Inventory{Disks: []*anvilv1.Disk{
		{Name: filepath.Base(a), Path: a, Kind: "virtual"},
		{Name: filepath.Base(b), Path: b, Kind: "virtual"},
	}}
	// Before Filter the loop devices are virtual: never targets.
	if _, err := al.Select(inv, []string{byIDA}); !errors.Is(err, ErrNotADisk) {
		t.Errorf("Select of a virtual device: err = %v, want ErrNotADisk", err)
	}
	// In host mode the allowlist makes an allowed loop device a disk.
	al.Filter(inv)
	if len(inv.Disks) != 1 || inv.Disks[0].GetPath() != a || inv.Disks[0].GetKind() != "disk" {
		t.Fatalf("Filter = %v, want only %s as kind disk", inv.Disks, a)
	}
	// Requested by symlink: resolved on both sides; the same device named
	// twice is selected once.
	got, err := al.Select(inv, []string{byIDA, a, chain})
	if err != nil || len(got) != 1 || got[0].GetPath() != a {
		t.Errorf("Select(%s, %s, %s) = %v, %v; want only %s", byIDA, a, chain, got, err, a)
	}
	if _, err := al.Select(inv, []string{byIDB}); err == nil || !strings.Contains(err.Error(), "allowlist") {
		t.Errorf("Select(symlink to another device) = %v, want refused as not allowlisted", err)
	}
	if _, err := al.Select(inv, []string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("Select of a path that does not resolve succeeded")
	}
}

// copyImage writes the disk image img onto the device dev (go-diskfs
// cannot partition a block device without re-reading its partition table,
// which loop devices without partition scanning refuse).
func copyImage(t *testing.T, img, dev string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	patch(t, dev, 0, b)
}

// TestCheckProtectedLoop runs the protect check on loop devices: a GPT
// written onto the device, then corrupted on it; and a device whose
// reads fail with EIO.
func TestCheckProtectedLoop(t *testing.T) {
	plain := loopdev.New(t, gptDiskSize)
	copyImage(t, gptDisk(t, "root"), plain)
	if err := CheckProtected(plain, DefaultProtectLabel); err != nil {
		t.Fatalf("GPT without the marker: %v", err)
	}
	marked := loopdev.New(t, gptDiskSize)
	copyImage(t, gptDisk(t, "root", "anvil-protected"), marked)
	if err := CheckProtected(marked, DefaultProtectLabel); !errors.Is(err, ErrProtected) {
		t.Fatalf("marked: err = %v, want ErrProtected", err)
	}

	// Both GPT headers fail their CRC: the marker may be there, unseen.
	corrupt := loopdev.New(t, gptDiskSize)
	copyImage(t, gptDisk(t, "anvil-protected"), corrupt)
	corruptHeader(t, corrupt, primaryHeader)
	corruptHeader(t, corrupt, backupHeader)
	err := CheckProtected(corrupt, DefaultProtectLabel)
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), corrupt) || !strings.Contains(err.Error(), "Checksum") {
		t.Fatalf("corrupt GPT: err = %v, want ErrUnreadable naming %s and the CRC", err, corrupt)
	}
	t.Log(err)

	// Reads fail: the loop device's backing file shrank under it, so the
	// loop driver ends every read with EIO.
	eio := loopdev.New(t, gptDiskSize)
	backing, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(eio), "loop", "backing_file"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(strings.TrimSpace(string(backing)), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(eio)
	if err != nil {
		t.Fatal(err)
	}
	// Drop whatever of the device is cached, so the reads reach the driver.
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	err = CheckProtected(eio, DefaultProtectLabel)
	if !errors.Is(err, ErrUnreadable) || !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), eio) {
		t.Fatalf("device failing reads: err = %v, want ErrUnreadable wrapping EIO naming %s", err, eio)
	}
	t.Log(err)
}
