package debian

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"gopkg.in/yaml.v3"
)

// builtImage is the raw image make images-debian leaves in images/out
// (ANVIL_DEBIAN_IMAGE overrides); the tests skip without it.
func builtImage(t *testing.T) string {
	t.Helper()
	p := os.Getenv("ANVIL_DEBIAN_IMAGE")
	if p == "" {
		p = filepath.Join("..", "out", "debian-12.raw")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no built Debian image at %s (%v): run `make images-debian` as root (debootstrap, a few minutes); it is not part of make test", p, err)
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

func TestImage(t *testing.T) {
	image := builtImage(t)
	table, root := openRoot(t, image)
	var parts []*gpt.Partition
	for _, p := range table.Partitions {
		if p != nil && p.Type != gpt.Unused {
			parts = append(parts, p)
		}
	}
	if len(parts) != 2 || parts[0].Type != gpt.EFISystemPartition || parts[1].Type != gpt.LinuxFilesystem {
		t.Fatalf("partitions %v, want an ESP and a Linux filesystem", parts)
	}
	rootGUID := strings.ToLower(parts[1].GUID)
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	// The seed partition and the backup GPT fit after the root.
	if free := st.Size() - int64(parts[1].End+1)*512; free < 65<<20 {
		t.Errorf("%d MiB free after the root partition, want 65 MiB (seed + backup GPT)", free>>20)
	}

	t.Run("fstab", func(t *testing.T) {
		b := readFile(t, root, "etc/fstab")
		for _, want := range []string{
			"PARTUUID=" + rootGUID + "  /              ext4",
			"PARTUUID=" + strings.ToLower(parts[0].GUID) + "  /boot/efi",
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("fstab lacks %q:\n%s", want, b)
			}
		}
	})
	t.Run("boot", func(t *testing.T) {
		b, err := CheckBoot(image, rootGUID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kexec: %s", b.Describe())
	})
	t.Run("phone-home unit enabled", func(t *testing.T) {
		unit := "etc/systemd/system/anvil-phone-home.service"
		b := readFile(t, root, unit)
		for _, want := range []string{"After=network-online.target", "Wants=network-online.target",
			"ExecStart=/usr/local/sbin/anvil-phone-home", "WantedBy=multi-user.target"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", unit, want)
			}
		}
		link, err := root.ReadLink("etc/systemd/system/multi-user.target.wants/anvil-phone-home.service")
		if err != nil || link != "/"+unit {
			t.Errorf("multi-user.target.wants/anvil-phone-home.service -> %q, %v; want /%s", link, err, unit)
		}
		fi, err := root.Stat("usr/local/sbin/anvil-phone-home")
		if err != nil || fi.Mode().Perm()&0o111 == 0 || fi.Size() == 0 {
			t.Errorf("usr/local/sbin/anvil-phone-home: %v, %v", fi, err)
		}
	})
	t.Run("networkd enabled", func(t *testing.T) {
		for _, l := range []string{"multi-user.target.wants/systemd-networkd.service", "network-online.target.wants/systemd-networkd-wait-online.service"} {
			if _, err := root.ReadLink("etc/systemd/system/" + l); err != nil {
				t.Errorf("%s: %v", l, err)
			}
		}
		if _, err := root.Stat("usr/sbin/netplan"); err != nil {
			t.Errorf("netplan (cloud-init's network renderer): %v", err)
		}
	})
	t.Run("cloud-init NoCloud only", func(t *testing.T) {
		var cfg struct {
			DatasourceList []string `yaml:"datasource_list"`
			Datasource     struct {
				NoCloud struct {
					FSLabel string `yaml:"fs_label"`
				} `yaml:"NoCloud"`
			} `yaml:"datasource"`
			SystemInfo struct {
				Network struct {
					Renderers []string `yaml:"renderers"`
				} `yaml:"network"`
			} `yaml:"system_info"`
		}
		if err := yaml.Unmarshal(readFile(t, root, "etc/cloud/cloud.cfg.d/90-anvil.cfg"), &cfg); err != nil {
			t.Fatal(err)
		}
		if strings.Join(cfg.DatasourceList, ",") != "NoCloud,None" || cfg.Datasource.NoCloud.FSLabel != "CIDATA" {
			t.Errorf("datasource_list %v fs_label %q, want [NoCloud None] CIDATA", cfg.DatasourceList, cfg.Datasource.NoCloud.FSLabel)
		}
		if strings.Join(cfg.SystemInfo.Network.Renderers, ",") != "netplan" {
			t.Errorf("network renderers %v, want [netplan]", cfg.SystemInfo.Network.Renderers)
		}
		// No other file may set the list.
		entries, err := root.ReadDir("etc/cloud/cloud.cfg.d")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if n := e.Name(); n != "90-anvil.cfg" && strings.HasSuffix(n, ".cfg") && strings.Contains(string(readFile(t, root, "etc/cloud/cloud.cfg.d/"+n)), "datasource_list") {
				t.Errorf("%s sets datasource_list too", n)
			}
		}
	})
	t.Run("no per-machine state", func(t *testing.T) {
		if b := readFile(t, root, "etc/machine-id"); len(b) != 0 {
			t.Errorf("etc/machine-id is %q, want empty (made on first boot)", b)
		}
		entries, err := root.ReadDir("etc/ssh")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "ssh_host_") {
				t.Errorf("etc/ssh/%s shipped: every machine must make its own host keys", e.Name())
			}
		}
	})
}

func readFile(t *testing.T, fsys fs.FS, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func TestCatalogue(t *testing.T) {
	builtImage(t)
	out := filepath.Join("..", "out")
	for _, c := range []struct{ entry, id, file, format string }{
		{"debian-12.json", "debian-12", "debian-12.raw.zst", "raw-zstd"},
		{"debian-12-tar.json", "debian-12-tar", "debian-12.tar.zst", "tar-zstd"},
	} {
		b, err := os.ReadFile(filepath.Join(out, c.entry))
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: %v", c.entry, err)
		}
		want := map[string]string{"id": c.id, "file": c.file, "format": c.format, "os": "debian", "version": "12"}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("%s: %s = %q, want %q", c.entry, k, e[k], v)
			}
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
		if sum := "sha256:" + hex.EncodeToString(h.Sum(nil)); e["checksum"] != sum {
			t.Errorf("%s: checksum %s, the file's is %s", c.entry, e["checksum"], sum)
		}
	}
}
