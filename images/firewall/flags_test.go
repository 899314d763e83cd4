package firewall

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// anvilFirewall builds firewall/cmd/anvil-firewall (the build cache makes
// it quick after make build: seconds, not the minutes of a cold build of
// client-go) and returns its path.
func anvilFirewall(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("../../firewall/cmd/anvil-firewall"); err != nil {
		t.Fatalf("firewall/cmd/anvil-firewall: %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go tool on PATH to build anvil-firewall: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "anvil-firewall")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// make build's flags (but -ldflags, which only the link sees), so its
	// build cache serves this one.
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-o", bin, "./firewall/cmd/anvil-firewall")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./firewall/cmd/anvil-firewall: %v\n%s", err, out)
	}
	return bin
}

// flagSet is the binary's flags by name; true when the flag takes a value.
func flagSet(t *testing.T, bin string) map[string]bool {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("anvil-firewall -h: %v\n%s", err, out.String())
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)( \S+)?$`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = m[2] != ""
	}
	if len(flags) < 10 {
		t.Fatalf("anvil-firewall -h lists %d flags:\n%s", len(flags), out.String())
	}
	return flags
}

// checkArgs fails unless args parse with the binary's flags: every flag
// known, every value where one is due, no stray words.
func checkArgs(t *testing.T, flags map[string]bool, what string, args []string) {
	t.Helper()
	for i := 0; i < len(args); i++ {
		name, ok := flagName(args[i])
		if !ok {
			t.Errorf("%s: %q is no flag (anvil-firewall takes no arguments)", what, args[i])
			continue
		}
		name, _, hasValue := strings.Cut(name, "=")
		takes, known := flags[name]
		switch {
		case !known:
			t.Errorf("%s: anvil-firewall has no flag %q", what, args[i])
		case takes && !hasValue:
			if i++; i == len(args) {
				t.Errorf("%s: %q lacks its value", what, args[i-1])
			}
		}
	}
}

// docsExamples are the #cloud-config blocks of docs/firewall-image.md.
func docsExamples(t *testing.T) (doc string, examples [][]byte) {
	t.Helper()
	b, err := os.ReadFile("../../docs/firewall-image.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?ms)^```yaml\n(#cloud-config\n.*?)^```$").FindAllSubmatch(b, -1) {
		examples = append(examples, m[1])
	}
	if len(examples) == 0 {
		t.Fatal("docs/firewall-image.md has no #cloud-config example")
	}
	return string(b), examples
}

// TestFlags checks every anvil-firewall command line the image can run
// against the binary's flags: the unit's ExecStart, the docs' example and
// what UserData writes; then runs the docs' example (its kubeconfig
// swapped for a policies directory) with --dry-run.
func TestFlags(t *testing.T) {
	bin := anvilFirewall(t)
	flags := flagSet(t, bin)

	u := parseUnit(t, overlayFile(t, "/etc/systemd/system/"+Unit))
	start := strings.Fields(u.one(t, "Service", "ExecStart"))
	var literal []string
	for _, w := range start[1:] {
		if w != "$"+OptsVar {
			literal = append(literal, w)
		}
	}
	checkArgs(t, flags, "ExecStart", literal)

	s := Settings{Kubeconfig: []byte("x"), Args: []string{"--cluster-interface", "vlan100", "--default-egress", "deny", "--masquerade"}}
	checkArgs(t, flags, "UserData", s.Flags())
	checkArgs(t, flags, "UserData", Settings{Policies: map[string][]byte{"a.yaml": nil}}.Flags())

	doc, examples := docsExamples(t)
	// The flags the docs list.
	list := doc[strings.Index(doc, "The flags are anvil-firewall's"):]
	list = list[:strings.Index(list, "Never `--dry-run`")]
	for _, m := range regexp.MustCompile("`(--[a-z0-9-]+)").FindAllStringSubmatch(list, -1) {
		if _, ok := flags[m[1][2:]]; !ok {
			t.Errorf("docs/firewall-image.md lists %s, which anvil-firewall does not have", m[1])
		}
	}
	for i, ex := range examples {
		cc := parseCloudConfig(t, ex)
		var opts []string
		haveKubeconfig := false
		for _, f := range cc.WriteFiles {
			switch f.Path {
			case DefaultsFile:
				opts = envFile(t, content(t, f.Encoding, f.Content), OptsVar)
			case KubeconfigPath:
				haveKubeconfig = true
				if f.Permissions != "0600" {
					t.Errorf("example %d: kubeconfig mode %s, want 0600", i, f.Permissions)
				}
				if _, err := clientcmd.Load(content(t, f.Encoding, f.Content)); err != nil {
					t.Errorf("example %d: kubeconfig: %v", i, err)
				}
			}
		}
		if opts == nil {
			t.Fatalf("example %d does not write %s", i, DefaultsFile)
		}
		checkArgs(t, flags, "docs example", opts)
		if err := (Settings{Args: opts}).Validate(); err != nil {
			t.Errorf("example %d: %v", i, err)
		}

		// Standalone instead of the cluster, once.
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "deny.yaml"), []byte(denyEgress), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--dry-run", "--policies-dir", dir}
		for j := 0; j < len(opts); j++ {
			if opts[j] == "--kubeconfig" && j+1 < len(opts) {
				if opts[j+1] != KubeconfigPath || !haveKubeconfig {
					t.Errorf("example %d: --kubeconfig %s, but it writes no kubeconfig there", i, opts[j+1])
				}
				j++
				continue
			}
			args = append(args, opts[j])
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("anvil-firewall %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		for _, want := range []string{"table inet anvil {", "hook forward", "default/deny-egress"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("dry-run of example %d lacks %q:\n%s", i, want, stdout.String())
			}
		}
	}
}

// denyEgress isolates the pods of "default" for egress, allowing DNS.
const denyEgress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-egress
  namespace: default
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - ports:
        - protocol: UDP
          port: 53
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  containers:
    - name: web
      image: nginx
status:
  phase: Running
  podIP: 10.0.0.5
  podIPs:
    - ip: 10.0.0.5
`
