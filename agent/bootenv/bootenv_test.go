package bootenv

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseOrder(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{name: "modorder output", in: "# written by initramfs/modorder\nvirtio_ring.ko\nvirtio.ko\n\nvirtio_net.ko # NIC\n", want: []string{"virtio_ring.ko", "virtio.ko", "virtio_net.ko"}},
		{name: "empty", in: "\n# nothing\n"},
		{name: "path", in: "../etc/passwd.ko\n", wantErr: "not a file name"},
		{name: "compressed", in: "virtio.ko.zst\n", wantErr: "uncompressed"},
		{name: "twice", in: "a.ko\nb.ko\na.ko\n", wantErr: "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOrder(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// uRootMountinfo is /proc/self/mountinfo as u-root's init leaves it (its
// libinit namespace: /dev, /proc, /tmp, /dev/pts, /dev/shm, /sys, /etc).
const uRootMountinfo = `1 1 0:2 / / rw - rootfs rootfs rw,size=499872k,nr_inodes=124968
16 1 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=499876k,nr_inodes=124969,mode=755
17 1 0:19 / /proc rw,relatime - proc proc rw
18 1 0:20 / /tmp rw,relatime - tmpfs tmpfs rw
19 16 0:21 / /dev/pts rw,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
20 16 0:22 / /dev/shm rw,relatime - tmpfs tmpfs rw
21 1 0:23 / /sys rw,relatime - sysfs sysfs rw
22 1 0:20 /etc /etc rw,relatime - tmpfs tmpfs rw
23 21 0:24 / /sys/fs/cgroup rw,relatime - tmpfs cgroup rw
`

func TestParseMountinfo(t *testing.T) {
	got, err := parseMountinfo(strings.NewReader(uRootMountinfo + `30 1 0:40 / /mnt/with\040space rw - ext4 /dev/vda1 rw
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Fatalf("%d entries: %v", len(got), got)
	}
	if got[1] != (mountPoint{Target: "/dev", FSType: "devtmpfs"}) || got[9].Target != "/mnt/with space" || got[9].FSType != "ext4" {
		t.Errorf("entries %v", got)
	}
	for _, bad := range []string{"1 2 3\n", `1 1 0:2 / /a\04 rw - ext4 x rw` + "\n", `1 1 0:2 / /a\999 rw - ext4 x rw` + "\n"} {
		if _, err := parseMountinfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMountinfo(%q) succeeded", bad)
		}
	}
}

func TestMissingMounts(t *testing.T) {
	have, err := parseMountinfo(strings.NewReader(uRootMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountSpec{
		{Source: "proc", Target: "/proc", FSType: "proc"},
		{Source: "sysfs", Target: "/sys/", FSType: "sysfs"},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs"},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs"},
		{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs"},
	}
	got := missingMounts(have, want)
	if len(got) != 1 || got[0].Target != "/run" {
		t.Errorf("missing %v, want only /run", got)
	}
	if got := missingMounts(nil, want); len(got) != len(want) {
		t.Errorf("nothing mounted: missing %v", got)
	}
}

func TestPhysicalLinks(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	got := physicalLinks([]linkInfo{
		{Name: "lo", Loopback: true, HasDevice: false},
		{Name: "eth1", MAC: mac, HasDevice: true},
		{Name: "eth0", MAC: mac, HasDevice: true},
		{Name: "br0", MAC: mac},
		{Name: "ib0", MAC: make(net.HardwareAddr, 20), HasDevice: true},
		{Name: "sit0", HasDevice: false},
	})
	if !slices.Equal(got, []string{"eth0", "eth1"}) {
		t.Errorf("links %q", got)
	}
}

func TestSettler(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := settler{quiet: time.Second}
	steps := []struct {
		at   time.Duration
		seen []string
		want bool
	}{
		{0, []string{"vda"}, false},
		{500 * time.Millisecond, []string{"vda"}, false},
		{700 * time.Millisecond, []string{"nvme0n1", "vda"}, false},
		{1500 * time.Millisecond, []string{"vda", "nvme0n1"}, false},
		{1700 * time.Millisecond, []string{"nvme0n1", "vda"}, true},
	}
	for _, st := range steps {
		if got := s.observe(t0.Add(st.at), st.seen); got != st.want {
			t.Errorf("at %v with %v: settled = %v, want %v", st.at, st.seen, got, st.want)
		}
	}
}

func TestSettleDisks(t *testing.T) {
	root := t.TempDir()
	block := filepath.Join(root, "sys", "block")
	if err := os.MkdirAll(filepath.Join(block, "vda"), 0o755); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.Mkdir(filepath.Join(block, "nvme0n1"), 0o755)
	}()
	cfg := Config{SettleQuiet: 300 * time.Millisecond, SettleTimeout: 5 * time.Second}
	got, err := settleDisks(context.Background(), cfg, newOptions([]Option{withRoot(root)}), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"nvme0n1", "vda"}) {
		t.Errorf("disks %q", got)
	}
	if _, err := settleDisks(context.Background(), cfg, newOptions([]Option{withRoot(t.TempDir())}), 20*time.Millisecond); err == nil {
		t.Error("no /sys/block: no error")
	}
}

func TestValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config (defaults): %v", err)
	}
	if err := Defaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	bad := Config{ModulesDir: "lib/modules", DHCPTimeout: -time.Second, DHCPRetries: -1, DHCPAttempts: -2, SettleQuiet: time.Minute, SettleTimeout: time.Second}
	err := bad.Validate()
	for _, want := range []string{"not absolute", "DHCP timeout", "DHCP retries", "DHCP attempts", "settle quiet"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if got := (Config{ModulesDir: "/m", OrderFile: "/etc/order"}).orderPath(); got != "/etc/order" {
		t.Errorf("absolute order path %q", got)
	}
	if got := (Config{ModulesDir: "/m", OrderFile: "order"}).orderPath(); got != "/m/order" {
		t.Errorf("relative order path %q", got)
	}
}
