package nocloud

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks/gptread"
	"github.com/anvil-metal/anvil/agent/disks/gptread/gpttest"
	"github.com/anvil-metal/anvil/images/internal/diskimg"
)

func TestParsePhoneHome(t *testing.T) {
	tests := []struct {
		in   string
		want PhoneHome
		err  string
	}{
		{`{"url":"http://10.0.2.2:8080/phone-home","token":"anvp_abc"}`, PhoneHome{URL: "http://10.0.2.2:8080/phone-home", Token: "anvp_abc"}, ""},
		{`{"url":"https://anvil.example.net/phone-home","token":"t","extra":1}`, PhoneHome{URL: "https://anvil.example.net/phone-home", Token: "t"}, ""},
		{`{"url":"","token":"t"}`, PhoneHome{}, "url is empty"},
		{`{"url":"ftp://x/y","token":"t"}`, PhoneHome{}, "want http or https"},
		{`{"url":"http:///path","token":"t"}`, PhoneHome{}, "has no host"},
		{`{"url":"http://x/","token":""}`, PhoneHome{}, "token is empty"},
		{`{"url":"http://x/","token":"a b"}`, PhoneHome{}, "white space"},
		{`{"url":"","token":""}`, PhoneHome{}, "url is empty"},
		{`not json`, PhoneHome{}, "parse anvil/phone-home.json"},
	}
	for _, tc := range tests {
		got, err := ParsePhoneHome([]byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParsePhoneHome(%s): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParsePhoneHome(%s) = %v, want an error with %q", tc.in, err, tc.err)
		case got != tc.want:
			t.Errorf("ParsePhoneHome(%s) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseMetaData(t *testing.T) {
	tests := []struct {
		in   string
		want MetaData
		err  bool
	}{
		{"instance-id: i-0123\nlocal-hostname: web-1\n", MetaData{InstanceID: "i-0123", LocalHostname: "web-1"}, false},
		{"local-hostname: db-2\npublic-keys: [ssh-ed25519 AAAA]\n", MetaData{LocalHostname: "db-2"}, false},
		{"", MetaData{}, false},
		{"instance-id: [unclosed\n", MetaData{}, true},
	}
	for _, tc := range tests {
		got, err := ParseMetaData([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMetaData(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestReadFS(t *testing.T) {
	fsys := fstest.MapFS{
		"meta-data":             {Data: []byte("local-hostname: web-1\n")},
		"user-data":             {Data: []byte("#cloud-config\n")},
		"anvil/phone-home.json": {Data: []byte(`{"url":"http://h/phone-home","token":"tok"}`)},
	}
	s, err := ReadFS(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.MetaData) != "local-hostname: web-1\n" || string(s.UserData) != "#cloud-config\n" || s.NetworkConfig != nil {
		t.Errorf("ReadFS = %+v", s)
	}
	if s.PhoneHome == nil || *s.PhoneHome != (PhoneHome{URL: "http://h/phone-home", Token: "tok"}) {
		t.Errorf("PhoneHome = %+v", s.PhoneHome)
	}
	if _, err := ReadFS(fstest.MapFS{"user-data": {Data: []byte("x")}}); err == nil {
		t.Error("ReadFS without meta-data: no error")
	}
	if _, err := ReadFS(fstest.MapFS{"meta-data": {}, "anvil/phone-home.json": {Data: []byte(`{"url":"x"}`)}}); err == nil {
		t.Error("ReadFS with a bad phone-home.json: no error")
	}
}

func TestIsSeed(t *testing.T) {
	for _, tc := range []struct {
		name, label string
		ok          bool
	}{{"cidata", "", true}, {"CIDATA", "NO NAME", true}, {"", "CIDATA     ", true}, {"", "cidata", true}, {"root", "ESP", false}, {"", "", false}} {
		if _, ok := isSeed(tc.name, tc.label); ok != tc.ok {
			t.Errorf("isSeed(%q, %q) = %v, want %v", tc.name, tc.label, ok, tc.ok)
		}
	}
}

// gptImage makes a sparse image of size bytes with one Linux partition
// from 1 MiB to 2 MiB before the end.
func gptImage(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: uint64(size/512) - 4096 - 1, Type: gpt.LinuxFilesystem, Name: "root"},
	}}
	if err := tbl.Write(f, size); err != nil {
		t.Fatal(err)
	}
	return img
}

func testSeed() Seed {
	return Seed{
		MetaData:      []byte("instance-id: i-1\nlocal-hostname: tiny-1\n"),
		UserData:      []byte("#cloud-config\n"),
		NetworkConfig: []byte("version: 2\n"),
		PhoneHome:     &PhoneHome{URL: "http://10.0.2.2:8080/phone-home", Token: "anvp_token"},
	}
}

// TestAppendFind appends a seed to a GPT image as the agent does and finds
// it again; sfdisk and fsck.vfat accept the result.
func TestAppendFind(t *testing.T) {
	img := gptImage(t, 24<<20)
	if _, err := Find([]string{img}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find before Append: %v, want ErrNotFound", err)
	}
	s := testSeed()
	idx, err := Append(img, s, AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if idx != 2 {
		t.Errorf("seed partition %d, want 2", idx)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	// The seed follows the last partition (which ends 2 MiB before the
	// old end), a free MiB for the backup GPT after it.
	if want := int64(22<<20 + diskimg.MinSize + 1<<20); st.Size() != want {
		t.Errorf("image is %d bytes, want %d", st.Size(), want)
	}
	f, err := Find([]string{filepath.Join(t.TempDir(), "missing.img"), img})
	if err != nil {
		t.Fatal(err)
	}
	if f.Device != img || f.Partition != 2 || !strings.Contains(f.Mark, "GPT partition name") {
		t.Errorf("Find = %s", f)
	}
	if !reflect.DeepEqual(f.Seed, s) {
		t.Errorf("Find seed = %+v, want %+v", f.Seed, s)
	}
	if _, err := Append(img, s, AppendOptions{}); err == nil || !strings.Contains(err.Error(), "already has a seed") {
		t.Errorf("second Append: %v, want already has a seed", err)
	}
	if _, err := exec.LookPath("sfdisk"); err == nil {
		if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
		out, err := exec.Command("sfdisk", "-d", img).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `name="cidata"`) {
			t.Errorf("sfdisk -d: %v\n%s", err, out)
		}
	}
	if _, err := exec.LookPath("fsck.vfat"); err == nil {
		part := filepath.Join(t.TempDir(), "seed.img")
		copyRange(t, img, part, 22<<20, diskimg.MinSize)
		out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput()
		if err != nil {
			t.Errorf("fsck.vfat -n: %v\n%s", err, out)
		}
		if lbl, err := exec.Command("fatlabel", part).CombinedOutput(); err == nil && strings.TrimSpace(string(lbl)) != Label {
			t.Errorf("fatlabel = %q, want %s", lbl, Label)
		}
	}
}

// TestFindWholeDisk finds a seed that is a FAT filesystem labelled CIDATA
// on a disk of its own, without a partition table.
func TestFindWholeDisk(t *testing.T) {
	img := filepath.Join(t.TempDir(), "seed.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(diskimg.MinSize); err != nil {
		t.Fatal(err)
	}
	fsys, err := diskimg.MakeFAT32(file.New(f, false), diskimg.MinSize, 0, 512, Label, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := diskimg.WriteFile(fsys, MetaDataFile, []byte("local-hostname: h\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	found, err := Find([]string{img})
	if err != nil {
		t.Fatal(err)
	}
	if found.Partition != 0 || !strings.Contains(found.Mark, "label") || found.Seed.PhoneHome != nil {
		t.Errorf("Find = %s, seed %+v", found, found.Seed)
	}
}

func copyRange(t *testing.T, src, dst string, off, n int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	b := make([]byte, n)
	if _, err := in.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func FuzzParsePhoneHome(f *testing.F) {
	f.Add([]byte(`{"url":"http://10.0.2.2:1/phone-home","token":"anvp_x"}`))
	f.Add([]byte(`{"url":"https://[::1]:443/p","token":"t"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePhoneHome(b)
		if err == nil {
			if verr := p.Validate(); verr != nil {
				t.Fatalf("parsed %+v does not validate: %v", p, verr)
			}
		}
	})
}

func FuzzParseMetaData(f *testing.F) {
	f.Add([]byte("instance-id: i-1\nlocal-hostname: web-1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseMetaData(b)
	})
}

// TestAppendRefusesAForgedGPT: a GPT whose headers pass their CRC but
// declare 2^32-1 entries of 2^32-1 bytes is ErrNoGPT (the table cannot be
// read, gptread.ErrUnreadable), the image left as it was. The old Append
// handed it to go-diskfs's gpt.Read, whose buffer size overflows: make
// panicked.
func TestAppendRefusesAForgedGPT(t *testing.T) {
	const size = 24 << 20
	img := gptImage(t, size)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	gpttest.HugeEntries(b, size)
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Append(img, testSeed(), AppendOptions{})
	if !errors.Is(err, ErrNoGPT) || !errors.Is(err, gptread.ErrUnreadable) || !strings.Contains(err.Error(), img) {
		t.Fatalf("err = %v, want ErrNoGPT and gptread.ErrUnreadable naming %s", err, img)
	}
	if after, err := os.ReadFile(img); err != nil || !bytes.Equal(after, b) {
		t.Errorf("a refused Append changed the image (%v)", err)
	}
	blank := filepath.Join(t.TempDir(), "blank.img")
	if err := os.WriteFile(blank, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Append(blank, testSeed(), AppendOptions{}); !errors.Is(err, ErrNoGPT) || !errors.Is(err, gptread.ErrNoGPT) {
		t.Errorf("blank image: %v, want ErrNoGPT", err)
	}
}
