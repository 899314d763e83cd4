package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	policyYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: %s
  namespace: prod
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24}
`
	nsYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {env: prod}
`
	podJSON = `{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "web-1", "namespace": "prod", "labels": {"app": "web"}},
 "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
 "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}
`
	svcYAML = `apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  ports: [{port: 443}]
status:
  loadBalancer: {ingress: [{ip: 198.51.100.1}]}
`
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	// Write then rename, as a deployment tool would: a poll never sees a
	// half-written file.
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func startDir(t *testing.T, dir string) *recorder {
	t.Helper()
	r := newRecorder()
	run(t, NewDir(dir, Options{Poll: 20 * time.Millisecond, Logger: testLogger(t)}), r)
	return r
}

func errorsText(u Update) string {
	var s []string
	for _, e := range u.Errors {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}

func TestDirGoodFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "policies.yaml", "# policies of prod\n"+fmt.Sprintf(policyYAML, "web")+"---\n"+nsYAML+"---\n# empty\n---\n"+fmt.Sprintf(policyYAML, "second"))
	write(t, dir, "pod.json", podJSON)
	write(t, dir, "svc.yml", svcYAML)
	write(t, dir, "README.md", "not a manifest")
	write(t, dir, ".hidden.yaml", "kind: [broken")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := startDir(t, dir)
	u := r.waitFor(t, "initial", 5*time.Second, func(Update) bool { return true })
	want := []string{"policy prod/web", "policy prod/second", "ns prod", "pod prod/web-1", "svc default/lb"}
	if !hasAll(u.Snapshot, want...) || len(names(u.Snapshot)) != len(want) {
		t.Fatalf("snapshot = %s; want %v", describe(u.Snapshot), want)
	}
	if len(u.Errors) != 0 {
		t.Fatalf("errors: %s", errorsText(u))
	}
	p := u.Snapshot.Pods[0]
	if p.Status.PodIPs[1].IP != "fd00::1" || p.Spec.Containers[0].Ports[0].ContainerPort != 8080 || p.Labels["app"] != "web" {
		t.Errorf("pod decoded wrong: %+v", p)
	}
	if s := u.Snapshot.Services[0]; s.Status.LoadBalancer.Ingress[0].IP != "198.51.100.1" || s.Spec.Ports[0].Port != 443 {
		t.Errorf("service decoded wrong: %+v", s)
	}
	if np := u.Snapshot.Policies[1]; np.Name != "web" || np.Spec.Ingress[0].From[0].IPBlock.CIDR != "192.0.2.0/24" {
		t.Errorf("policy decoded wrong: %+v", np)
	}
	// Unchanged content (even rewritten) gives no further notify.
	write(t, dir, "svc.yml", svcYAML)
	time.Sleep(200 * time.Millisecond)
	if n := r.count(); n != 1 {
		t.Errorf("%d notifies without a content change, want 1", n)
	}
}

func TestDirList(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "list.yaml", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: a}
  spec: {podSelector: {}}
- apiVersion: v1
  kind: Pod
  metadata: {name: p, namespace: a}
  status: {podIP: 10.0.0.9}
`)
	write(t, dir, "typed.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {name: l1, namespace: a}
  spec: {podSelector: {}}
- metadata: {name: l2}
  spec: {podSelector: {}}
`)
	r := startDir(t, dir)
	u := r.waitFor(t, "initial", 5*time.Second, func(Update) bool { return true })
	want := []string{"ns a", "policy a/deny", "pod a/p", "policy a/l1", "policy default/l2"}
	if !hasAll(u.Snapshot, want...) || len(names(u.Snapshot)) != len(want) || len(u.Errors) != 0 {
		t.Fatalf("snapshot = %s, errors %q; want %v", describe(u.Snapshot), errorsText(u), want)
	}
}

// TestDirMalformedKeepsLastGood: a file that turns bad keeps its previous
// objects and is reported by name and document; other files still apply.
func TestDirMalformedKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", fmt.Sprintf(policyYAML, "p1")+"---\n"+nsYAML)
	write(t, dir, "b.yaml", fmt.Sprintf(policyYAML, "b1"))
	r := startDir(t, dir)
	r.waitFor(t, "initial", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "policy prod/p1", "ns prod", "policy prod/b1") })

	// a.yaml: document 1 would remove p1 for p2, document 2 is broken YAML;
	// b.yaml changes at the same time.
	write(t, dir, "a.yaml", fmt.Sprintf(policyYAML, "p2")+"---\nkind: [unclosed\n")
	write(t, dir, "b.yaml", fmt.Sprintf(policyYAML, "b2"))
	u := r.waitFor(t, "b.yaml applied", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "policy prod/b2") })
	if !hasAll(u.Snapshot, "policy prod/p1", "ns prod") || !hasNone(u.Snapshot, "policy prod/p2", "policy prod/b1") {
		t.Errorf("snapshot = %s; want a.yaml's last good version (p1, ns prod) and b2", describe(u.Snapshot))
	}
	if len(u.Errors) != 1 {
		t.Fatalf("errors = %q, want one", errorsText(u))
	}
	if msg := u.Errors[0].Error(); !strings.Contains(msg, "a.yaml") || !strings.Contains(msg, "document 2") || !strings.Contains(msg, "last good") {
		t.Errorf("error %q does not name the file, the document and the kept version", msg)
	}

	// Strict decoding: a typo in a field is an error too, not a silently
	// wider policy.
	write(t, dir, "a.yaml", strings.Replace(fmt.Sprintf(policyYAML, "p3"), "podSelector", "podSelectr", 1))
	u = r.waitFor(t, "typo reported", 5*time.Second, func(u Update) bool { return strings.Contains(errorsText(u), "podSelectr") })
	if !hasAll(u.Snapshot, "policy prod/p1", "ns prod") || !hasNone(u.Snapshot, "policy prod/p3") {
		t.Errorf("snapshot after a typo = %s", describe(u.Snapshot))
	}
	if msg := errorsText(u); !strings.Contains(msg, "a.yaml") || !strings.Contains(msg, "document 1") {
		t.Errorf("error %q does not name file and document", msg)
	}

	// Fixed: the new version replaces the old one and the error is gone.
	write(t, dir, "a.yaml", fmt.Sprintf(policyYAML, "p4"))
	u = r.waitFor(t, "fixed file applied", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "policy prod/p4") })
	if !hasNone(u.Snapshot, "policy prod/p1", "ns prod") || len(u.Errors) != 0 {
		t.Errorf("snapshot = %s, errors %q", describe(u.Snapshot), errorsText(u))
	}

	// A new file that is bad from the start contributes nothing.
	write(t, dir, "c.json", `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"`)
	u = r.waitFor(t, "bad new file reported", 5*time.Second, func(u Update) bool { return strings.Contains(errorsText(u), "c.json") })
	if !hasNone(u.Snapshot, "pod default/x") || strings.Contains(errorsText(u), "last good") {
		t.Errorf("snapshot = %s, errors %q", describe(u.Snapshot), errorsText(u))
	}
}

func TestDirFileRemoval(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", fmt.Sprintf(policyYAML, "p1"))
	write(t, dir, "b.json", podJSON)
	r := startDir(t, dir)
	r.waitFor(t, "initial", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "policy prod/p1", "pod prod/web-1") })
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	u := r.waitFor(t, "removal", 5*time.Second, func(u Update) bool { return hasNone(u.Snapshot, "policy prod/p1") })
	if !hasAll(u.Snapshot, "pod prod/web-1") {
		t.Errorf("snapshot = %s", describe(u.Snapshot))
	}
	// A removed bad file takes its error (and its last good objects) along.
	write(t, dir, "b.json", `{`)
	r.waitFor(t, "bad b.json", 5*time.Second, func(u Update) bool { return len(u.Errors) == 1 && hasAll(u.Snapshot, "pod prod/web-1") })
	if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "all removed", 5*time.Second, func(u Update) bool { return len(names(u.Snapshot)) == 0 && len(u.Errors) == 0 })
}

func TestDirUnknownKind(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
	write(t, dir, "foo.yaml", fmt.Sprintf(policyYAML, "ok")+"---\napiVersion: example.com/v1\nkind: Foo\nmetadata: {name: f}\n")
	write(t, dir, "nokind.yaml", "apiVersion: v1\nmetadata: {name: n}\n")
	write(t, dir, "noversion.yaml", "kind: Pod\nmetadata: {name: n}\n")
	write(t, dir, "noname.yaml", "apiVersion: v1\nkind: Namespace\n")
	write(t, dir, "badlist.yaml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n")
	write(t, dir, "dup.yaml", nsYAML)
	write(t, dir, "dup2.yaml", nsYAML)
	r := startDir(t, dir)
	u := r.waitFor(t, "initial", 5*time.Second, func(Update) bool { return true })
	msg := errorsText(u)
	t.Logf("errors:\n%s", msg)
	for _, want := range []string{
		"cm.yaml: document 1: v1 ConfigMap is not supported",
		"foo.yaml: document 2: example.com/v1 Foo is not a kind this firewall knows",
		"nokind.yaml: document 1: no kind",
		"noversion.yaml: document 1: Pod has no apiVersion",
		"noname.yaml: document 1: Namespace has no metadata.name",
		"badlist.yaml: document 1, item 1: v1 Secret is not supported",
		"dup2.yaml: document 1: Namespace prod is defined again (first in " + filepath.Join(dir, "dup.yaml") + ": document 1)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	if len(u.Errors) != 7 {
		t.Errorf("%d errors, want 7:\n%s", len(u.Errors), msg)
	}
	// foo.yaml is bad as a whole: its good document does not apply.
	if !hasNone(u.Snapshot, "policy prod/ok") || !hasAll(u.Snapshot, "ns prod") || len(names(u.Snapshot)) != 1 {
		t.Errorf("snapshot = %s, want only ns prod", describe(u.Snapshot))
	}
}

func TestDirResync(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", nsYAML)
	r := newRecorder()
	run(t, NewDir(dir, Options{Poll: 20 * time.Millisecond, Resync: 100 * time.Millisecond, Logger: testLogger(t)}), r)
	r.waitFor(t, "initial", 5*time.Second, func(Update) bool { return true })
	time.Sleep(450 * time.Millisecond)
	if n := r.count(); n < 4 || n > 6 {
		t.Errorf("%d notifies in 450 ms with resync 100 ms, want 4..6", n)
	}
	if u, _ := r.last(); !hasAll(u.Snapshot, "ns prod") {
		t.Errorf("resync snapshot = %s", describe(u.Snapshot))
	}
}

func TestDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	err := NewDir(dir, Options{Logger: testLogger(t)}).Run(context.Background(), func(Update) { t.Error("notified") })
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Run on a missing directory = %v, want ErrNotExist naming it", err)
	}
}

// TestDirVanishes: a directory that disappears after the start keeps the
// last state and reports the directory.
func TestDirVanishes(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "m")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "a.yaml", nsYAML)
	r := startDir(t, dir)
	r.waitFor(t, "initial", 5*time.Second, func(u Update) bool { return hasAll(u.Snapshot, "ns prod") })
	if err := os.Rename(dir, filepath.Join(parent, "gone")); err != nil {
		t.Fatal(err)
	}
	u := r.waitFor(t, "directory error", 5*time.Second, func(u Update) bool { return len(u.Errors) == 1 })
	if !hasAll(u.Snapshot, "ns prod") || !strings.Contains(u.Errors[0].Error(), dir) {
		t.Errorf("snapshot %s, errors %q", describe(u.Snapshot), errorsText(u))
	}
	if err := os.Rename(filepath.Join(parent, "gone"), dir); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "directory back", 5*time.Second, func(u Update) bool { return len(u.Errors) == 0 && hasAll(u.Snapshot, "ns prod") })
}

// FuzzParse: any file content decodes to named objects or to errors that
// name the file, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(policyYAML, "p") + "---\n" + nsYAML))
	f.Add([]byte(podJSON))
	f.Add([]byte(svcYAML))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n"))
	f.Add([]byte("kind: [unclosed"))
	f.Add([]byte("---\n---\n"))
	d := NewDir("unused", Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, errs := d.parse("f.yaml", data)
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), "f.yaml: ") {
				t.Errorf("error %q does not name the file", e)
			}
		}
		for _, o := range objs {
			if o.name == "" || o.obj == nil || o.kind == "" {
				t.Errorf("object without name, kind or value: %+v", o)
			}
		}
	})
}
