package firewall

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/firewall/apply"
	"github.com/anvil-metal/anvil/firewall/config"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// unitFile is a parsed systemd unit file: section → key → values in
// order (an empty assignment resets the list, as systemd does).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, b []byte) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[' && l[len(l)-1] == ']':
			section = l[1 : len(l)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("line %d %q: not KEY=VALUE in a section", n, l)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = nil
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// one is the single value of key, failing the test otherwise.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s = %q, want one value", section, key, v)
		return ""
	}
	return v[0]
}

// words is the union of the white-space separated words of key.
func (u unitFile) words(section, key string) []string {
	var w []string
	for _, v := range u[section][key] {
		w = append(w, strings.Fields(v)...)
	}
	return w
}

func overlayFile(t *testing.T, abs string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("overlay", abs))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOverlayFiles(t *testing.T) {
	var got []string
	err := filepath.WalkDir("overlay", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, strings.TrimPrefix(p, "overlay"))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		GuardRuleset, SysctlFile,
		"/etc/systemd/system/" + GuardUnit, "/etc/systemd/system/" + Unit,
		"/etc/systemd/system/anvil-phone-home.service.d/firewall.conf",
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("overlay holds %q, want %q", got, want)
	}
	// The machine's own configuration comes from its user-data only.
	for _, p := range got {
		if p == DefaultsFile || p == KubeconfigPath || strings.HasPrefix(p, PoliciesDir+"/") {
			t.Errorf("overlay ships %s: it must come from the user-data", p)
		}
	}
}

func TestUnit(t *testing.T) {
	u := parseUnit(t, overlayFile(t, "/etc/systemd/system/"+Unit))
	for _, want := range []string{"network-online.target", "cloud-init.service", GuardUnit} {
		if !slices.Contains(u.words("Unit", "After"), want) {
			t.Errorf("After=%v lacks %s", u.words("Unit", "After"), want)
		}
	}
	if !slices.Contains(u.words("Unit", "Wants"), "network-online.target") {
		t.Errorf("Wants=%v lacks network-online.target", u.words("Unit", "Wants"))
	}
	if c := u.one(t, "Unit", "ConditionPathExists"); c != DefaultsFile {
		t.Errorf("ConditionPathExists=%s, want %s", c, DefaultsFile)
	}
	// A leading '-' would start it without its options.
	if e := u.one(t, "Service", "EnvironmentFile"); e != DefaultsFile {
		t.Errorf("EnvironmentFile=%s, want %s", e, DefaultsFile)
	}
	exec := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(exec) == 0 || exec[0] != Binary {
		t.Errorf("ExecStart=%q, want %s first", exec, Binary)
	}
	// "$VAR" alone is split into words; "${VAR}" would be one argument.
	if !slices.Contains(exec, "$"+OptsVar) {
		t.Errorf("ExecStart=%q lacks the word $%s", exec, OptsVar)
	}
	for k, v := range map[string]string{
		"Restart": "always", "Type": "exec", "CapabilityBoundingSet": "CAP_NET_ADMIN", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
		"RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "MemoryDenyWriteExecute": "yes",
		"SystemCallFilter": "@system-service", "RestartPreventExitStatus": "2",
	} {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("%s=%s, want %s", k, got, v)
		}
	}
	if af := u.words("Service", "RestrictAddressFamilies"); !slices.Contains(af, "AF_NETLINK") {
		t.Errorf("RestrictAddressFamilies=%v: nf_tables needs AF_NETLINK", af)
	}
	// Each would cut it off from the host's ruleset or from CAP_NET_ADMIN.
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "User", "DynamicUser", "NetworkNamespacePath", "AmbientCapabilities", "SecureBits"} {
		if v, ok := u["Service"][k]; ok {
			t.Errorf("%s=%v: the service must run as root in the host's network namespace", k, v)
		}
	}
	if w := u.one(t, "Install", "WantedBy"); w != "multi-user.target" {
		t.Errorf("WantedBy=%s, want multi-user.target", w)
	}
}

func TestGuard(t *testing.T) {
	u := parseUnit(t, overlayFile(t, "/etc/systemd/system/"+GuardUnit))
	if d := u.one(t, "Unit", "DefaultDependencies"); d != "no" {
		t.Errorf("DefaultDependencies=%s: it must run before the network is up", d)
	}
	for _, want := range []string{"network-pre.target", Unit} {
		if !slices.Contains(u.words("Unit", "Before"), want) {
			t.Errorf("Before=%v lacks %s", u.words("Unit", "Before"), want)
		}
	}
	if !slices.Contains(u.words("Unit", "Wants"), "network-pre.target") {
		t.Errorf("Wants=%v lacks network-pre.target (nothing else pulls it in)", u.words("Unit", "Wants"))
	}
	table := config.Defaults().Table
	if s := u.one(t, "Service", "ExecStart"); !strings.Contains(s, "nft -f "+GuardRuleset) ||
		!strings.Contains(s, "nft list table inet "+table+" ") || !strings.Contains(s, "nft list table inet "+apply.AltTable(table)+" ") {
		t.Errorf("ExecStart=%s: want nft -f %s unless table inet %s or %s exists", s, GuardRuleset, table, apply.AltTable(table))
	}
	if r := u.one(t, "Service", "RemainAfterExit"); r != "yes" {
		t.Errorf("RemainAfterExit=%s, want yes (loaded once per boot)", r)
	}
	if w := u.one(t, "Install", "WantedBy"); w != "sysinit.target" {
		t.Errorf("WantedBy=%s, want sysinit.target", w)
	}

	nft := string(overlayFile(t, GuardRuleset))
	m := regexp.MustCompile(`(?m)^table inet (\S+) \{`).FindAllStringSubmatch(nft, -1)
	if len(m) != 1 || m[0][1] != config.Defaults().Table {
		t.Errorf("guard tables %q, want exactly inet %s (anvil-firewall's default table, which replaces it)", m, config.Defaults().Table)
	}
	if !regexp.MustCompile(`type filter hook forward priority filter; policy drop;`).MatchString(nft) {
		t.Errorf("guard has no forward chain with policy drop:\n%s", nft)
	}
	if strings.Contains(nft, "flush ruleset") {
		t.Error("guard flushes the ruleset: it must leave other tables alone")
	}
}

func TestSysctl(t *testing.T) {
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(overlayFile(t, SysctlFile)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%q: not key = value", l)
		}
		got[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	want := map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
	if len(got) != len(want) || got["net.ipv4.ip_forward"] != "1" || got["net.ipv6.conf.all.forwarding"] != "1" {
		t.Errorf("%s sets %v, want %v", SysctlFile, got, want)
	}
}

func TestPhoneHomeDropIn(t *testing.T) {
	deb, err := os.ReadFile("../debian/overlay/etc/systemd/system/anvil-phone-home.service")
	if err != nil {
		t.Fatal(err)
	}
	base := parseUnit(t, deb).one(t, "Service", "ExecStart")
	in := parseUnit(t, overlayFile(t, "/etc/systemd/system/anvil-phone-home.service.d/firewall.conf"))
	// The parser resets on "ExecStart=", as systemd does: one value left.
	if got, want := in.one(t, "Service", "ExecStart"), base+" -system "+ImageID; got != want {
		t.Errorf("drop-in ExecStart=%q, want the Debian unit's plus -system: %q", got, want)
	}
	raw := overlayFile(t, "/etc/systemd/system/anvil-phone-home.service.d/firewall.conf")
	if !regexp.MustCompile(`(?m)^ExecStart=\n`).Match(raw) {
		t.Error("drop-in does not reset ExecStart= first (systemd would refuse a second command line)")
	}
}

// TestSystemdAnalyze has systemd check the units as it would load them,
// on a tree with stand-ins for the binaries.
func TestSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("no systemd-analyze (hack/install-deps.sh installs systemd): %v", err)
	}
	dir := t.TempDir()
	for _, f := range []string{"/etc/systemd/system/" + Unit, "/etc/systemd/system/" + GuardUnit} {
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), overlayFile(t, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, Unit), filepath.Join(dir, GuardUnit)).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// The binary is not installed on this host.
		if l != "" && l != Unit+": Command "+Binary+" is not executable: No such file or directory" {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	if err != nil && t.Failed() {
		t.Logf("systemd-analyze verify: %v", err)
	}

	root := t.TempDir()
	for _, f := range []string{"/etc/systemd/system/" + Unit, "/etc/systemd/system/" + GuardUnit} {
		writeTree(t, root, f, overlayFile(t, f), 0o644)
	}
	writeTree(t, root, Binary, []byte("#!/bin/sh\n"), 0o755)
	out, err = exec.Command(sa, "security", "--offline=yes", "--threshold=30", "--no-pager", "--root="+root, Unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
	if err != nil {
		t.Errorf("exposure %s is above 3.0 (%v)", m[1], err)
	}
}

func writeTree(t *testing.T, root, abs string, b []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, abs)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

// recipe is what recipe.sh sets, as images/debian/build.sh sees it.
type recipe struct {
	ID, Hostname       string
	Packages, Features []string
	Configure          string
}

func sourceRecipe(t *testing.T) recipe {
	t.Helper()
	script := `set -euo pipefail
. ./recipe.sh
printf '%s\n' "$image_id" "$image_hostname"
printf '%s ' "${image_packages[@]}"; echo
printf '%s ' "${image_features[@]}"; echo
declare -f recipe_configure`
	out, err := exec.Command("bash", "-c", script).Output()
	if err != nil {
		t.Fatalf("source recipe.sh: %v", err)
	}
	lines := strings.SplitN(string(out), "\n", 5)
	if len(lines) != 5 {
		t.Fatalf("recipe.sh: %q", out)
	}
	return recipe{ID: lines[0], Hostname: lines[1], Packages: strings.Fields(lines[2]), Features: strings.Fields(lines[3]), Configure: lines[4]}
}

func TestRecipe(t *testing.T) {
	r := sourceRecipe(t)
	if r.ID != ImageID {
		t.Errorf("image_id %q, want %q", r.ID, ImageID)
	}
	if !slices.Contains(r.Packages, "nftables") {
		t.Errorf("image_packages %q lack nftables", r.Packages)
	}
	if !slices.Equal(r.Features, []string{Feature}) {
		t.Errorf("image_features %q, want [%s] (it forwards: not a plain machine image)", r.Features, Feature)
	}
	for _, f := range r.Features {
		if _, ok := anvilv1.ImageFeature_value["IMAGE_FEATURE_"+strings.ToUpper(f)]; !ok {
			t.Errorf("feature %q is no ImageFeature of the proto", f)
		}
	}
	for _, want := range []string{
		"./firewall/cmd/anvil-firewall", `"$root` + Binary + `"`,
		"systemctl enable " + GuardUnit + " " + Unit, "systemctl disable nftables.service",
	} {
		if !strings.Contains(r.Configure, want) {
			t.Errorf("recipe_configure lacks %q:\n%s", want, r.Configure)
		}
	}
}

// TestCatalogueEntry runs images/debian/build.sh's own catalogue function
// with the recipe's settings.
func TestCatalogueEntry(t *testing.T) {
	build, err := os.ReadFile("../debian/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	fn := regexp.MustCompile(`(?ms)^catalogue\(\) \{.*?^\}$`).Find(build)
	if fn == nil {
		t.Fatal("no catalogue() in images/debian/build.sh")
	}
	out := t.TempDir()
	for _, id := range []string{ImageID, "debian-12"} {
		if err := os.WriteFile(filepath.Join(out, id+".raw.zst"), []byte("image"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := "set -euo pipefail\n. ./recipe.sh\nout=\"$1\"\n" + string(fn) + "\ncatalogue \"$image_id\" \"$image_id.raw.zst\" raw-zstd\n"
	for _, c := range []struct {
		name, script string
		features     []string
	}{
		{"firewall recipe", script, []string{Feature}},
		// The Debian image itself: no features key, as before recipes.
		{"no recipe", strings.Replace(script, ". ./recipe.sh\n", "image_id=debian-12\nimage_features=()\n", 1), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := exec.Command("bash", "-c", c.script, "catalogue", out).Output()
			if err != nil {
				t.Fatalf("catalogue: %v", err)
			}
			var e map[string]any
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("catalogue entry %q: %v", b, err)
			}
			if e["format"] != "raw-zstd" || e["os"] != "debian" || e["version"] != "12" {
				t.Errorf("entry %v", e)
			}
			if e["checksum"] != "sha256:6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d" {
				t.Errorf("checksum %v, want sha256 of \"image\"", e["checksum"])
			}
			f, ok := e["features"]
			if c.features == nil {
				if ok {
					t.Errorf("features %v, want none", f)
				}
				return
			}
			var got []string
			for _, x := range f.([]any) {
				got = append(got, x.(string))
			}
			if !slices.Equal(got, c.features) || e["id"] != ImageID {
				t.Errorf("id %v features %v, want %s %v", e["id"], got, ImageID, c.features)
			}
		})
	}
}
