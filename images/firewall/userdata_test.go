package firewall

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// cloudConfig is the part of a #cloud-config document these tests read.
type cloudConfig struct {
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Owner       string `yaml:"owner"`
		Permissions string `yaml:"permissions"`
		Encoding    string `yaml:"encoding"`
		Content     string `yaml:"content"`
		Defer       bool   `yaml:"defer"`
	} `yaml:"write_files"`
}

func parseCloudConfig(t *testing.T, b []byte) cloudConfig {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("#cloud-config\n")) {
		t.Fatalf("user-data does not start with #cloud-config:\n%s", b)
	}
	var c cloudConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("user-data: %v\n%s", err, b)
	}
	return c
}

// content is a write_files entry's content as cloud-init writes it.
func content(t *testing.T, encoding, s string) []byte {
	t.Helper()
	switch encoding {
	case "":
		return []byte(s)
	case "b64", "base64":
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("base64 content: %v", err)
		}
		return b
	}
	t.Fatalf("encoding %q", encoding)
	return nil
}

// envFile reads an EnvironmentFile= the way systemd does for the simple
// assignments anvil writes (KEY=VALUE, VALUE optionally in double quotes,
// comments), and returns the words "$KEY" expands to in ExecStart=.
func envFile(t *testing.T, b []byte, key string) []string {
	t.Helper()
	var words []string
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		if strings.TrimSpace(k) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if strings.ContainsAny(v, `"'\$`) {
			t.Errorf("%s=%s: quotes, backslashes or $ would be interpreted", key, v)
		}
		words, found = strings.Fields(v), true
	}
	if !found {
		t.Fatalf("no %s= in\n%s", key, b)
	}
	return words
}

func TestUserData(t *testing.T) {
	kubeconfig := []byte("apiVersion: v1\nkind: Config\n# \"quotes\", $dollars and\ttabs survive base64\n")
	for _, c := range []struct {
		name  string
		s     Settings
		files []string // paths in order, then DefaultsFile
		flags []string
	}{
		{
			name:  "kubeconfig",
			s:     Settings{Kubeconfig: kubeconfig, Args: []string{"--cluster-interface", "vlan*,bond0", "--default-egress=deny", "--masquerade", "--metrics-addr", "[::]:9105"}},
			files: []string{KubeconfigPath, DefaultsFile},
			flags: []string{"--kubeconfig", KubeconfigPath, "--cluster-interface", "vlan*,bond0", "--default-egress=deny", "--masquerade", "--metrics-addr", "[::]:9105"},
		},
		{
			name: "policies",
			s: Settings{Policies: map[string][]byte{"b.yml": []byte("kind: List\n"), "a.yaml": []byte("kind: NetworkPolicy\n")},
				Args: []string{"--snat-v4", "192.0.2.1", "--snat-v6", "2001:db8::1"}},
			files: []string{PoliciesDir + "/a.yaml", PoliciesDir + "/b.yml", DefaultsFile},
			flags: []string{"--policies-dir", PoliciesDir, "--snat-v4", "192.0.2.1", "--snat-v6", "2001:db8::1"},
		},
		{
			name:  "in-cluster",
			s:     Settings{},
			files: []string{DefaultsFile},
			flags: nil,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ud, err := UserData(c.s)
			if err != nil {
				t.Fatal(err)
			}
			cc := parseCloudConfig(t, ud)
			var paths []string
			for _, f := range cc.WriteFiles {
				paths = append(paths, f.Path)
				if f.Owner != "root:root" || f.Defer {
					t.Errorf("%s: owner %q defer %v, want root:root, written in the init stage", f.Path, f.Owner, f.Defer)
				}
				got := content(t, f.Encoding, f.Content)
				switch {
				case f.Path == KubeconfigPath:
					if f.Permissions != "0600" || !bytes.Equal(got, kubeconfig) {
						t.Errorf("kubeconfig: mode %s content %q", f.Permissions, got)
					}
				case strings.HasPrefix(f.Path, PoliciesDir+"/"):
					if want := c.s.Policies[strings.TrimPrefix(f.Path, PoliciesDir+"/")]; f.Permissions != "0644" || !bytes.Equal(got, want) {
						t.Errorf("%s: mode %s content %q, want %q", f.Path, f.Permissions, got, want)
					}
				case f.Path == DefaultsFile:
					if f.Permissions != "0644" {
						t.Errorf("%s: mode %s", f.Path, f.Permissions)
					}
					if w := envFile(t, got, OptsVar); !slices.Equal(w, c.flags) {
						t.Errorf("$%s expands to %q, want %q", OptsVar, w, c.flags)
					}
				}
			}
			if !slices.Equal(paths, c.files) {
				t.Errorf("write_files %q, want %q", paths, c.files)
			}
		})
	}
}

func TestUserDataRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		s    Settings
		want []string
	}{
		{"both sources", Settings{Kubeconfig: []byte("x"), Policies: map[string][]byte{"a.yaml": nil}}, []string{"exclude each other"}},
		{"policy name", Settings{Policies: map[string][]byte{"../a.yaml": nil, "b.txt": nil}}, []string{`"../a.yaml"`, `"b.txt"`}},
		{"space", Settings{Args: []string{"--cluster-interface", "vlan1 vlan2"}}, []string{`"vlan1 vlan2"`}},
		{"quote", Settings{Args: []string{`--table="x"`}}, []string{`--table=\"x\"`}},
		{"dollar", Settings{Args: []string{"--table", "$HOME"}}, []string{`"$HOME"`}},
		{"empty", Settings{Args: []string{""}}, []string{`argument 0 ""`}},
		{"dry-run", Settings{Args: []string{"--dry-run"}}, []string{"exit"}},
		{"kubeconfig twice", Settings{Kubeconfig: []byte("x"), Args: []string{"--kubeconfig=/x"}}, []string{"set by the user-data"}},
		{"policies-dir twice", Settings{Policies: map[string][]byte{"a.yaml": nil}, Args: []string{"-policies-dir", "/x"}}, []string{"set by the user-data"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := UserData(c.s)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// A kubeconfig given as a file path flag, without the user-data
	// writing one, is the operator's business.
	if _, err := UserData(Settings{Args: []string{"--kubeconfig", "/etc/kubernetes/admin.conf"}}); err != nil {
		t.Errorf("--kubeconfig of an existing file: %v", err)
	}
}
