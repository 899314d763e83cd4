package firewall

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"gopkg.in/yaml.v3"

	"github.com/anvil-metal/anvil/images/debian"
)

// builtImage is the raw image make images-firewall leaves in images/out
// (ANVIL_FIREWALL_IMAGE overrides); the tests skip without it.
func builtImage(t *testing.T) string {
	t.Helper()
	p := os.Getenv("ANVIL_FIREWALL_IMAGE")
	if p == "" {
		p = filepath.Join("..", "out", ImageID+".raw")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no built firewall image at %s (%v): run `make images-firewall` as root (debootstrap, about ten minutes); it is not part of make test", p, err)
	}
	return p
}

// openRoot opens the image's GPT and its ext4 root partition (p2).
func openRoot(t *testing.T, image string) (*gpt.Table, *ext4.FileSystem) {
	t.Helper()
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatalf("partition table: %v", err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table is %s, want GPT", pt.Type())
	}
	fsys, err := d.GetFilesystem(2)
	if err != nil {
		t.Fatalf("filesystem on p2: %v", err)
	}
	root, ok := fsys.(*ext4.FileSystem)
	if !ok {
		t.Fatalf("p2 holds %v, want ext4", fsys.Type())
	}
	return table, root
}

func readFile(t *testing.T, fsys fs.FS, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// exists reports whether name is in its directory (go-diskfs does not
// report a missing file as fs.ErrNotExist).
func exists(t *testing.T, root *ext4.FileSystem, name string) bool {
	t.Helper()
	entries, err := root.ReadDir(filepath.Dir(name))
	if err != nil {
		return false
	}
	return slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return e.Name() == filepath.Base(name) })
}

func TestImage(t *testing.T) {
	image := builtImage(t)
	table, root := openRoot(t, image)
	var rootGUID string
	for _, p := range table.Partitions {
		if p != nil && p.Index == 2 {
			rootGUID = strings.ToLower(p.GUID)
		}
	}

	t.Run("boot", func(t *testing.T) {
		b, err := debian.CheckBoot(image, rootGUID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kexec: %s", b.Describe())
	})
	t.Run("overlay installed", func(t *testing.T) {
		err := filepath.WalkDir("overlay", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			want, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			name := strings.TrimPrefix(p, "overlay/")
			if got := readFile(t, root, name); !bytes.Equal(got, want) {
				t.Errorf("/%s differs from the overlay's", name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("units enabled", func(t *testing.T) {
		for link, target := range map[string]string{
			"etc/systemd/system/multi-user.target.wants/" + Unit:                  "/etc/systemd/system/" + Unit,
			"etc/systemd/system/sysinit.target.wants/" + GuardUnit:                "/etc/systemd/system/" + GuardUnit,
			"etc/systemd/system/multi-user.target.wants/anvil-phone-home.service": "/etc/systemd/system/anvil-phone-home.service",
		} {
			if got, err := root.ReadLink(link); err != nil || got != target {
				t.Errorf("%s -> %q, %v; want %s", link, got, err, target)
			}
		}
		// Its /etc/nftables.conf flushes the ruleset: the guard's and anvil's table.
		if !exists(t, root, "usr/lib/systemd/system/nftables.service") && !exists(t, root, "lib/systemd/system/nftables.service") {
			t.Error("nftables.service not installed (the nftables package)")
		}
		if exists(t, root, "etc/systemd/system/sysinit.target.wants/nftables.service") {
			t.Error("nftables.service is enabled: it would flush the guard at boot")
		}
	})
	t.Run("binaries", func(t *testing.T) {
		for _, p := range []string{Binary, "/usr/sbin/nft", "/usr/local/sbin/anvil-phone-home"} {
			fi, err := root.Stat(strings.TrimPrefix(p, "/"))
			if err != nil || fi.Mode().Perm()&0o111 == 0 || fi.Size() == 0 {
				t.Errorf("%s: %v, %v", p, fi, err)
			}
		}
		// The image's anvil-firewall runs here (static) and knows the
		// flags the docs' example passes.
		bin := filepath.Join(t.TempDir(), "anvil-firewall")
		if err := os.WriteFile(bin, readFile(t, root, strings.TrimPrefix(Binary, "/")), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -version: %v\n%s", Binary, err, out)
		}
		t.Logf("anvil-firewall %s", strings.TrimSpace(string(out)))
		flags := flagSet(t, bin)
		_, examples := docsExamples(t)
		for _, ex := range examples {
			for _, f := range parseCloudConfig(t, ex).WriteFiles {
				if f.Path == DefaultsFile {
					checkArgs(t, flags, "docs example", envFile(t, content(t, f.Encoding, f.Content), OptsVar))
				}
			}
		}
	})
	t.Run("configured by user-data only", func(t *testing.T) {
		for _, p := range []string{DefaultsFile, KubeconfigPath, PoliciesDir} {
			if exists(t, root, strings.TrimPrefix(p, "/")) {
				t.Errorf("%s shipped: it comes from the machine's user-data", p)
			}
		}
		if h := strings.TrimSpace(string(readFile(t, root, "etc/hostname"))); h != "firewall" {
			t.Errorf("etc/hostname %q, want firewall", h)
		}
	})
	t.Run("cloud-init writes files in its init stage", func(t *testing.T) {
		var cfg struct {
			Init []any `yaml:"cloud_init_modules"`
		}
		if err := yaml.Unmarshal(readFile(t, root, "etc/cloud/cloud.cfg"), &cfg); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range cfg.Init {
			if s, ok := m.(string); ok && (s == "write-files" || s == "write_files") {
				found = true
			}
		}
		if !found {
			t.Errorf("cloud_init_modules %v lack write-files: %s would be written after anvil-firewall.service starts", cfg.Init, DefaultsFile)
		}
	})
	t.Run("no per-machine state", func(t *testing.T) {
		if b := readFile(t, root, "etc/machine-id"); len(b) != 0 {
			t.Errorf("etc/machine-id is %q, want empty", b)
		}
		entries, err := root.ReadDir("etc/ssh")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "ssh_host_") {
				t.Errorf("etc/ssh/%s shipped", e.Name())
			}
		}
	})
}

func TestCatalogue(t *testing.T) {
	builtImage(t)
	out := filepath.Join("..", "out")
	for _, c := range []struct{ entry, id, file, format string }{
		{ImageID + ".json", ImageID, ImageID + ".raw.zst", "raw-zstd"},
		{ImageID + "-tar.json", ImageID + "-tar", ImageID + ".tar.zst", "tar-zstd"},
	} {
		b, err := os.ReadFile(filepath.Join(out, c.entry))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			ID, File, Checksum, Format, OS, Version string
			Features                                []string
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: %v", c.entry, err)
		}
		if e.ID != c.id || e.File != c.file || e.Format != c.format || e.OS != "debian" || e.Version != "12" {
			t.Errorf("%s: %+v, want id %s file %s format %s debian 12", c.entry, e, c.id, c.file, c.format)
		}
		if !slices.Equal(e.Features, []string{Feature}) {
			t.Errorf("%s: features %q, want [%s]", c.entry, e.Features, Feature)
		}
		f, err := os.Open(filepath.Join(out, c.file))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if sum := "sha256:" + hex.EncodeToString(h.Sum(nil)); e.Checksum != sum {
			t.Errorf("%s: checksum %s, the file's is %s", c.entry, e.Checksum, sum)
		}
	}
}
