package seed

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 ops@anvil"
	key2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC2 'quoted' #comment"
)

func TestMetaData(t *testing.T) {
	b, err := MetaData(Config{InstanceID: "anvil-m1-in-7", Hostname: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "instance-id: anvil-m1-in-7\nlocal-hostname: web-1\n"; string(b) != want {
		t.Errorf("meta-data %q, want %q", b, want)
	}
	var m map[string]string
	if err := yaml.Unmarshal(b, &m); err != nil || m["instance-id"] != "anvil-m1-in-7" || m["local-hostname"] != "web-1" {
		t.Errorf("meta-data parses to %v, %v", m, err)
	}
	b, _ = MetaData(Config{InstanceID: "anvil-x"})
	if string(b) != "instance-id: anvil-x\n" {
		t.Errorf("meta-data without host name %q", b)
	}
}

func TestInstanceIDAndValidate(t *testing.T) {
	cases := []struct{ machine, install, want string }{
		{"0b1c2d3e-0000-4000-8000-000000000001", "in-42", "anvil-0b1c2d3e-0000-4000-8000-000000000001-in-42"},
		{"", "in/../x y", "anvil-in-..-x-y"},
		{"m", "", "anvil-m"},
	}
	for _, c := range cases {
		if got := InstanceID(c.machine, c.install); got != c.want {
			t.Errorf("InstanceID(%q, %q) = %q, want %q", c.machine, c.install, got, c.want)
		}
	}
	bad := []Config{
		{},
		{InstanceID: "a/b"},
		{InstanceID: "i", Hostname: "-bad"},
		{InstanceID: "i", Hostname: "web_1"},
		{InstanceID: "i", SSHKeys: []string{"ssh-ed25519 A\nssh-rsa B"}},
		{InstanceID: "i", SSHKeys: []string{" "}},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := (Config{InstanceID: "i", Hostname: "web-1.example.org", SSHKeys: []string{key1}}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestUserDataWithoutOperatorData(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string
	}{
		{"nothing", Config{InstanceID: "i"}, "#cloud-config\n{}\n"},
		{"host name and keys", Config{InstanceID: "i", Hostname: "web-1", SSHKeys: []string{key1, key2}},
			"#cloud-config\nhostname: web-1\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 ops@anvil\n  - 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC2 ''quoted'' #comment'\n"},
		{"operator data only, as given", Config{InstanceID: "i", UserData: []byte("#!/bin/sh\necho hi")}, "#!/bin/sh\necho hi"},
	}
	for _, c := range cases {
		b, err := UserData(c.c)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%s: user-data %q, want %q", c.name, b, c.want)
		}
	}
}

// parts parses a multi-part user-data as a MIME reader does and returns
// each part's Content-Type and decoded body.
func parts(t *testing.T, ud []byte) (types []string, bodies [][]byte) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(ud))
	if err != nil {
		t.Fatalf("user-data is not a MIME message: %v\n%s", err, ud)
	}
	if msg.Header.Get("MIME-Version") != "1.0" {
		t.Errorf("no MIME-Version header (cloud-init looks for it)")
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q, %v", mt, err)
	}
	r := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			return types, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Transfer-Encoding") == "base64" {
			if body, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", "")); err != nil {
				t.Fatal(err)
			}
		}
		types = append(types, p.Header.Get("Content-Type"))
		bodies = append(bodies, body)
	}
}

func gzipped(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestUserDataCombinesOperatorDataWithKeys(t *testing.T) {
	innerMIME := "Content-Type: multipart/mixed; boundary=\"XYZ\"\nMIME-Version: 1.0\n\n--XYZ\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho a\n--XYZ--\n"
	cases := []struct {
		name     string
		operator []byte
		typ      string
		cte      string
	}{
		{"cloud-config", []byte("#cloud-config\nhostname: theirs\nruncmd:\n  - [touch, /x]\n"), `text/plain; charset="utf-8"`, "7bit"},
		{"script without a final newline", []byte("#!/bin/sh\necho no newline"), `text/plain; charset="utf-8"`, "7bit"},
		{"script ending in blank lines", []byte("#!/bin/sh\n\n\n"), `text/plain; charset="utf-8"`, "7bit"},
		{"non-ASCII", []byte("#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: \"Grüße\"\n"), `text/plain; charset="utf-8"`, "base64"},
		{"CRLF line ends", []byte("#!/bin/sh\r\necho crlf\r\n"), `text/plain; charset="utf-8"`, "base64"},
		{"looks like a boundary", []byte("#!/bin/sh\n--==anvil-seed-\n--\n"), `text/plain; charset="utf-8"`, "7bit"},
		{"gzip", gzipped(t, "#cloud-config\n{}\n"), "application/gzip", "base64"},
		{"MIME archive", []byte(innerMIME), `multipart/mixed; boundary="XYZ"`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ud, err := UserData(Config{InstanceID: "i", Hostname: "web-1", SSHKeys: []string{key1}, UserData: c.operator})
			if err != nil {
				t.Fatal(err)
			}
			types, bodies := parts(t, ud)
			if len(types) != 2 {
				t.Fatalf("%d parts, want 2:\n%s", len(types), ud)
			}
			if types[0] != c.typ {
				t.Errorf("operator part type %q, want %q", types[0], c.typ)
			}
			if c.cte != "" && !bytes.Contains(ud, []byte("Content-Transfer-Encoding: "+c.cte+"\n")) {
				t.Errorf("operator part not sent %s:\n%s", c.cte, ud)
			}
			want := c.operator
			if c.cte == "" {
				// Embedded as it is: its headers are the part's.
				_, body, _ := bytes.Cut(c.operator, []byte("\n\n"))
				want = body
				if !bytes.Contains(ud, c.operator) {
					t.Errorf("the MIME archive is not embedded verbatim:\n%s", ud)
				}
			}
			if !bytes.Equal(bodies[0], want) {
				t.Errorf("operator part %q, want %q byte for byte", bodies[0], want)
			}
			if types[1] != `text/plain; charset="utf-8"` || !bytes.HasPrefix(bodies[1], []byte("#cloud-config\n")) {
				t.Fatalf("anvil part %q: %q", types[1], bodies[1])
			}
			var cfg struct {
				Hostname string   `yaml:"hostname"`
				Keys     []string `yaml:"ssh_authorized_keys"`
				MergeHow string   `yaml:"merge_how"`
			}
			if err := yaml.Unmarshal(bodies[1], &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Hostname != "web-1" || len(cfg.Keys) != 1 || cfg.Keys[0] != key1 || cfg.MergeHow != mergeHow {
				t.Errorf("anvil part %+v", cfg)
			}
		})
	}
}

func TestUserDataMultipartGolden(t *testing.T) {
	ud, err := UserData(Config{InstanceID: "i", SSHKeys: []string{key1}, UserData: []byte("#!/bin/sh\necho hi\n")})
	if err != nil {
		t.Fatal(err)
	}
	b := boundaryFor([]byte("#!/bin/sh\necho hi\n"), []byte("#cloud-config\nssh_authorized_keys:\n  - "+key1+"\nmerge_how: dict(no_replace,recurse_list)+list(append)+str()\n"))
	want := `Content-Type: multipart/mixed; boundary="` + b + `"
MIME-Version: 1.0

--` + b + `
Content-Type: text/plain; charset="utf-8"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit

#!/bin/sh
echo hi

--` + b + `
Content-Type: text/plain; charset="utf-8"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit

#cloud-config
ssh_authorized_keys:
  - ` + key1 + `
merge_how: dict(no_replace,recurse_list)+list(append)+str()

--` + b + `--
`
	if string(ud) != want {
		t.Errorf("user-data:\n%s\nwant:\n%s", ud, want)
	}
}

func TestNetworkConfig(t *testing.T) {
	type config struct {
		Version   int `yaml:"version"`
		Ethernets map[string]struct {
			Match struct {
				Name string `yaml:"name"`
				MAC  string `yaml:"macaddress"`
			} `yaml:"match"`
			DHCP4 bool `yaml:"dhcp4"`
		} `yaml:"ethernets"`
	}
	parse := func(b []byte, err error) config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var nc config
		if err := yaml.Unmarshal(b, &nc); err != nil {
			t.Fatal(err)
		}
		return nc
	}
	// By MAC: one entry per NIC of the inventory, DHCPv4 on each.
	nc := parse(NetworkConfig([]string{"52:54:00:77:BB:01", "52:54:00:77:bb:02"}))
	macs := map[string]bool{}
	for id, e := range nc.Ethernets {
		if !e.DHCP4 || e.Match.Name != "" {
			t.Errorf("%s: %+v", id, e)
		}
		macs[e.Match.MAC] = true
	}
	if nc.Version != 2 || len(nc.Ethernets) != 2 || !macs["52:54:00:77:bb:01"] || !macs["52:54:00:77:bb:02"] {
		t.Errorf("network-config by MAC %+v", nc)
	}
	// No MAC known: by name.
	nc = parse(NetworkConfig(nil))
	names := map[string]bool{}
	for id, e := range nc.Ethernets {
		if !e.DHCP4 {
			t.Errorf("%s: no DHCPv4", id)
		}
		names[e.Match.Name] = true
	}
	if nc.Version != 2 || len(nc.Ethernets) != 2 || !names["en*"] || !names["eth*"] {
		t.Errorf("network-config by name %+v", nc)
	}
	if _, err := NetworkConfig([]string{"not-a-mac"}); err == nil {
		t.Error("a bad MAC was accepted")
	}
	if err := (Config{InstanceID: "i", MACs: []string{"zz"}}).Validate(); err == nil {
		t.Error("Validate accepted a bad MAC")
	}
}

func TestPhoneHome(t *testing.T) {
	c := Config{InstanceID: "i", PhoneHomeURL: "https://10.0.2.2:8443/v1/phone-home", PhoneHomeToken: "tok.en\"<&>"}
	b, err := PhoneHome(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["url"] != c.PhoneHomeURL || m["token"] != c.PhoneHomeToken {
		t.Errorf("phone-home.json %s", b)
	}
	files, err := Files(c)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if strings.Join(names, " ") != "meta-data user-data network-config anvil/phone-home.json" {
		t.Errorf("files %v", names)
	}
	c.PhoneHomeURL = ""
	if files, _ := Files(c); len(files) != 3 {
		t.Errorf("without a phone-home URL: %d files", len(files))
	}
	if _, err := Files(Config{}); err == nil {
		t.Error("a config without instance-id was rendered")
	}
}

func TestPlace(t *testing.T) {
	const mib = 2048 // 512-byte blocks
	disk := uint64(1 << 30 / 512)
	last := disk - 34
	cases := []struct {
		name    string
		parts   []Extent
		last    uint64
		lbs     int64
		want    Extent
		wantErr error
	}{
		{"after a rootfs layout", []Extent{{1, mib, 65*mib - 1}, {2, 65 * mib, disk - 65*mib - 1}}, last, 512,
			Extent{3, disk - 65*mib, disk - mib - 1}, nil},
		{"lowest free number", []Extent{{1, 3 * mib, 500 * mib}, {14, mib, 2*mib - 1}, {15, 2 * mib, 3*mib - 1}}, last, 512,
			Extent{2, disk - 65*mib, disk - mib - 1}, nil},
		{"4 KiB blocks", []Extent{{1, 256, 1000}}, disk/8 - 6, 4096,
			Extent{2, (disk/8 - 65*256), disk/8 - 256 - 1}, nil},
		{"image fills the disk", []Extent{{1, mib, last}}, last, 512, Extent{}, ErrNoRoom},
		{"one block short", []Extent{{1, mib, disk - 65*mib}}, last, 512, Extent{}, ErrNoRoom},
		{"tiny disk", nil, 60 * mib, 512, Extent{}, ErrNoRoom},
	}
	for _, c := range cases {
		got, err := Place(c.parts, c.last, c.lbs)
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: Place = %+v, %v; want %+v", c.name, got, err, c.want)
		}
		if int64(got.End-got.Start+1)*c.lbs != Size || int64(got.Start)*c.lbs%(1<<20) != 0 {
			t.Errorf("%s: %+v is not %d MiB on a MiB boundary", c.name, got, Size>>20)
		}
	}
	full := make([]Extent, 128)
	for i := range full {
		full[i] = Extent{Index: i + 1, Start: uint64(i + 1), End: uint64(i + 1)}
	}
	if _, err := Place(full, last, 512); !errors.Is(err, ErrNoRoom) {
		t.Errorf("all entries in use: %v", err)
	}
}

// FuzzMultipart checks that any operator user-data survives the multi-part
// archive byte for byte.
func FuzzMultipart(f *testing.F) {
	for _, s := range []string{"#cloud-config\n{}\n", "#!/bin/sh\r\n", "--x\n--x--\n", "\x1f\x8b\x00", "Grüße", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, operator []byte) {
		if len(operator) == 0 || isMIME(operator) {
			return
		}
		ud := Multipart(operator, []byte("#cloud-config\n{}\n"))
		_, bodies := parts(t, ud)
		if len(bodies) != 2 || !bytes.Equal(bodies[0], operator) {
			t.Fatalf("operator part %q, want %q", bodies, operator)
		}
	})
}
