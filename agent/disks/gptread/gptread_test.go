package gptread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/agent/disks/gptread/gpttest"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// image is a GPT disk image of size bytes with lbs-byte blocks made by
// go-diskfs: a protective MBR and one Linux partition per name.
func image(t testing.TB, size int64, lbs int, names ...string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(p, size, diskfs.SectorSize(lbs))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: lbs, PhysicalSectorSize: lbs, ProtectiveMBR: true}
	first := uint64(1 << 20 / lbs)
	for i, n := range names {
		start := first + uint64(i)*first
		tbl.Partitions = append(tbl.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: start + first - 1, Type: gpt.LinuxFilesystem, Name: n})
	}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	diskSize = 8 << 20
	// Offsets in a 512-byte-block image of diskSize bytes.
	primaryHeader  = 512
	primaryEntries = 1024
	backupHeader   = diskSize - 512
	backupEntries  = diskSize - 512 - 128*128
)

// edit returns a copy of b changed by f.
func edit(b []byte, f func(b []byte)) []byte {
	b = bytes.Clone(b)
	f(b)
	return b
}

// setHeader rewrites a field of the GPT header at off and fixes its CRC,
// as a forged header would.
func setHeader(b []byte, off, field int, v uint32) { gpttest.SetField(b, off, field, v) }

func dosMBR(size int) []byte {
	b := make([]byte, size)
	b[446+4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(b[446+8:], 2048)
	binary.LittleEndian.PutUint32(b[446+12:], 100)
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestProbePresent(t *testing.T) {
	mbr := func(typ byte) []byte {
		b := make([]byte, 8192)
		b[510], b[511] = 0x55, 0xaa
		b[446+16+4] = typ // second record
		return b
	}
	sig := func(b []byte, off int) []byte {
		copy(b[off:], Signature)
		return b
	}
	for _, c := range []struct {
		name string
		disk []byte
		want bool
	}{
		{"zeroes", make([]byte, 8192), false},
		{"DOS MBR (0x83)", mbr(0x83), false},
		{"protective MBR", mbr(0xee), true},
		{"0xEE record without boot signature", edit(mbr(0xee), func(b []byte) { b[511] = 0 }), false},
		{"header at LBA 1 (512)", sig(make([]byte, 8192), 512), true},
		{"header at LBA 1 (4096)", sig(make([]byte, 8192), 4096), true},
		{"signature elsewhere", sig(make([]byte, 8192), 1024), false},
		{"signature cut short", sig(make([]byte, 8192), 512)[:515], false},
		{"backup header only, LBA 0 blank", sig(make([]byte, 8192), 8192-512), true},
		{"backup header behind a protective MBR", sig(mbr(0xee), 8192-512), true},
		{"stale backup header behind a DOS MBR", sig(mbr(0x83), 8192-512), false},
	} {
		s, err := Probe(bytes.NewReader(c.disk), int64(len(c.disk)), 512)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := s.Present(); got != c.want {
			t.Errorf("%s: Present = %v (%+v), want %v", c.name, got, s, c.want)
		}
	}
}

func TestProbeBadInput(t *testing.T) {
	if _, err := Probe(bytes.NewReader(make([]byte, 4096)), 4096, 1000); err == nil || !strings.Contains(err.Error(), "1000") {
		t.Errorf("block size 1000: %v, want an error naming it", err)
	}
	if _, err := Probe(bytes.NewReader(make([]byte, 300)), 300, 512); !errors.Is(err, ErrUnreadable) {
		t.Errorf("300-byte device: %v, want ErrUnreadable", err)
	}
}

// TestRead: only a device with positively no GPT is ErrNoGPT; any other
// failure is ErrUnreadable with its cause, and a forged header never
// reaches go-diskfs (which allocates what the header asks for).
func TestRead(t *testing.T) {
	img := image(t, diskSize, 512, "root", "data")
	grown := func(b []byte) []byte { return append(bytes.Clone(b), make([]byte, diskSize)...) }
	headerCRC := edit(img, func(b []byte) { b[primaryHeader+56] ^= 0xff }) // disk GUID, CRC unchanged
	entriesCRC := edit(img, func(b []byte) { b[primaryEntries+32] ^= 0xff })
	bothHeaders := func(field int, v uint32) []byte {
		return edit(img, func(b []byte) {
			setHeader(b, primaryHeader, field, v)
			setHeader(b, backupHeader, field, v)
		})
	}
	for _, c := range []struct {
		name    string
		disk    []byte
		opts    []Option
		want    error
		cause   string
		backup  bool
		lbs     int
		wantLBS int
	}{
		{name: "valid", disk: img},
		{name: "zeroes", disk: make([]byte, 1<<20), want: ErrNoGPT},
		{name: "DOS MBR", disk: dosMBR(1 << 20), want: ErrNoGPT},
		{name: "DOS MBR over a GPT's remains", disk: edit(img, func(b []byte) {
			clear(b[:34*512])
			copy(b, dosMBR(512))
		}), want: ErrNoGPT},
		{name: "header CRC, valid backup", disk: headerCRC, backup: true},
		{name: "header CRC, valid backup, primary required", disk: headerCRC, opts: []Option{RequirePrimary()}, want: ErrUnreadable, cause: "only the backup"},
		{name: "first sectors wiped, backup left", disk: edit(img, func(b []byte) { clear(b[:34*512]) }), backup: true},
		{name: "primary header zeroed behind the protective MBR", disk: edit(img, func(b []byte) { clear(b[512:1024]) }), backup: true},
		// The image on a bigger disk: no backup at the disk's end.
		{name: "header CRC, no backup", disk: grown(headerCRC), want: ErrUnreadable, cause: "Checksum"},
		{name: "entries CRC, no backup", disk: grown(entriesCRC), want: ErrUnreadable, cause: "Partition Entry Checksum"},
		{name: "both headers fail their CRC", disk: edit(headerCRC, func(b []byte) { b[backupHeader+56] ^= 0xff }), want: ErrUnreadable, cause: "Checksum"},
		{name: "both entry arrays fail their CRC", disk: edit(entriesCRC, func(b []byte) { b[backupEntries+32] ^= 0xff }), want: ErrUnreadable, cause: "Partition Entry Checksum"},
		{name: "truncated in the entry array", disk: img[:8192], want: ErrUnreadable, cause: "past the device's end"},
		{name: "truncated in LBA 1", disk: img[:700], want: ErrUnreadable, cause: "too few"},
		{name: "truncated in LBA 0", disk: img[:300], want: ErrUnreadable, cause: "too few"},
		{name: "protective MBR without GPT headers", disk: edit(img, func(b []byte) {
			clear(b[primaryHeader : primaryHeader+512])
			clear(b[backupHeader:])
		}), want: ErrUnreadable, cause: "protective MBR"},
		{name: "0-byte entries", disk: edit(bothHeaders(84, 0), func(b []byte) {
			setHeader(b, primaryHeader, 88, 0) // the CRC32 of no entries
			setHeader(b, backupHeader, 88, 0)
		}), want: ErrUnreadable, cause: "entries of 0 bytes"},
		// go-diskfs's buffer size overflows: make panics.
		{name: "2^32-1 entries of 2^32-1 bytes", disk: edit(bothHeaders(84, 0xffffffff), func(b []byte) {
			setHeader(b, primaryHeader, 80, 0xffffffff)
			setHeader(b, backupHeader, 80, 0xffffffff)
		}), want: ErrUnreadable, cause: "entries of 4294967295 bytes"},
		{name: "64-byte entries", disk: bothHeaders(84, 64), want: ErrUnreadable, cause: "entries of 64 bytes"},
		{name: "an entry array of 4 GiB", disk: bothHeaders(80, 1<<25), want: ErrUnreadable, cause: "larger than"},
		{name: "entry array past the end", disk: edit(img, func(b []byte) {
			setHeader(b, primaryHeader, 72, 1<<30) // entries LBA (low half)
		}), want: ErrUnreadable, cause: "past the device's end"},
		{name: "forged backup, valid primary", disk: edit(img, func(b []byte) {
			setHeader(b, backupHeader, 84, 0)
			setHeader(b, backupHeader, 88, 0)
		}), want: ErrUnreadable, cause: "entries of 0 bytes"},
		{name: "4096-byte table", disk: image(t, diskSize, 4096, "root"), lbs: 4096, wantLBS: 4096},
		{name: "4096-byte table read with 512", disk: image(t, diskSize, 4096, "root"), want: ErrUnreadable, cause: "no GPT header for 512-byte blocks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lbs := c.lbs
			if lbs == 0 {
				lbs = 512
			}
			tbl, err := Read(bytes.NewReader(c.disk), int64(len(c.disk)), lbs, c.opts...)
			if c.want != nil {
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.cause) {
					t.Fatalf("err = %v, want %v naming %q", err, c.want, c.cause)
				}
				if c.want == ErrNoGPT && errors.Is(err, ErrUnreadable) {
					t.Fatalf("err = %v is both", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tbl.RecoveredFromBackup != c.backup || tbl.LogicalSectorSize != lbs || len(tbl.Partitions) == 0 {
				t.Fatalf("table: backup %v, %d-byte blocks, %d partitions; want backup %v, %d", tbl.RecoveredFromBackup, tbl.LogicalSectorSize, len(tbl.Partitions), c.backup, lbs)
			}
		})
	}
}

// TestReadIOError: an I/O error is ErrUnreadable wrapping the cause.
func TestReadIOError(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(image(t, diskSize, 512, "root")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Read(f, diskSize, 512) // closed: every read fails
	if !errors.Is(err, ErrUnreadable) || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("err = %v, want ErrUnreadable wrapping os.ErrClosed", err)
	}
}

func TestReadAny(t *testing.T) {
	img512, img4096 := image(t, diskSize, 512, "a"), image(t, diskSize, 4096, "a", "b")
	for _, c := range []struct {
		name  string
		disk  []byte
		want  error
		cause string
		sizes []int
	}{
		{name: "512", disk: img512, sizes: []int{512}},
		{name: "4096", disk: img4096, sizes: []int{4096}},
		{name: "4096, primary wiped", disk: edit(img4096, func(b []byte) { clear(b[:2*4096]) }), sizes: []int{4096}},
		{name: "blank", disk: make([]byte, 1<<20), want: ErrNoGPT},
		{name: "MBR", disk: dosMBR(1 << 20), want: ErrNoGPT},
		{name: "blank and tiny", disk: make([]byte, 600), want: ErrNoGPT},
		{name: "GPT truncated to 600 bytes", disk: img512[:600], want: ErrUnreadable, cause: "too few"},
		{name: "protective MBR alone", disk: edit(make([]byte, 1<<20), func(b []byte) { copy(b, img512[:512]) }), want: ErrUnreadable, cause: "protective MBR"},
		{name: "512 readable, 4096 broken", disk: edit(img512, func(b []byte) { copy(b[4096:], Signature) }), want: ErrUnreadable, cause: "4096-byte blocks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tables, err := ReadAny(bytes.NewReader(c.disk), int64(len(c.disk)))
			if c.want != nil {
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.cause) {
					t.Fatalf("err = %v, want %v naming %q", err, c.want, c.cause)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			for _, tbl := range tables {
				sizes = append(sizes, tbl.LogicalSectorSize)
			}
			if !slices.Equal(sizes, c.sizes) {
				t.Fatalf("tables with %v-byte blocks, want %v", sizes, c.sizes)
			}
		})
	}
}

// FuzzRead: no input panics or hangs the reader, and every error wraps
// one of the two sentinels.
func FuzzRead(f *testing.F) {
	f.Add(image(f, 64<<10, 512, "root"))
	f.Add(image(f, 64<<10, 512, "anvil-protected", "data"))
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, size := bytes.NewReader(b), int64(len(b))
		_, err := Read(r, size, 512)
		if err != nil && !errors.Is(err, ErrNoGPT) && !errors.Is(err, ErrUnreadable) {
			t.Fatalf("Read: error of neither kind: %v", err)
		}
		_, err = ReadAny(r, size)
		if err != nil && !errors.Is(err, ErrNoGPT) && !errors.Is(err, ErrUnreadable) {
			t.Fatalf("ReadAny: error of neither kind: %v", err)
		}
	})
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	good := image(t, diskSize, 512, "root")
	forged := edit(good, func(b []byte) {
		setHeader(b, primaryHeader, 80, 0xffffffff)
		setHeader(b, backupHeader, 80, 0xffffffff)
	})
	for name, c := range map[string]struct {
		b    []byte
		fail bool
	}{"good": {good, false}, "blank": {make([]byte, diskSize), false}, "forged": {forged, true}} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, c.b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := CheckFile(p)
		if c.fail != (err != nil) || (c.fail && !errors.Is(err, ErrUnreadable)) {
			t.Errorf("%s: CheckFile = %v", name, err)
		}
	}
	if err := CheckFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("CheckFile of a missing file succeeded")
	}
}
