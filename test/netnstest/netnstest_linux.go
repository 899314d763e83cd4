// Package netnstest gives tests network namespaces of their own, named
// (so `ip netns exec` and nft reach them) and deleted when the test ends:
// tests program nftables only there, never in the host's namespace.
package netnstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace and a descriptor of it.
type NS struct {
	Name string
	FD   int
}

// RequireRoot skips the test unless it runs as root, and fails it when
// nft(8) is missing (hack/install-deps.sh installs it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and programs nftables in them")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft(8) not found: %v", err)
	}
}

// seq tells apart the namespaces of one test process.
var seq atomic.Int64

// New creates a fresh namespace named prefix-pid-n with loopback up. It
// is entered on a locked OS thread only to create it; the thread returns
// to the original namespace before it is unlocked.
func New(t testing.TB, prefix string) NS {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	h := func() netns.NsHandle {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Fatalf("current netns: %v", err)
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			t.Fatalf("create netns %s: %v", name, err)
		}
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace: never unlock it.
			panic(fmt.Sprintf("return to the original netns: %v", err))
		}
		return h
	}()
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	Run(t, "", "ip", "-n", name, "link", "set", "lo", "up")
	return NS{Name: name, FD: int(h)}
}

// Do runs fn on a locked OS thread inside ns (for sockets that must live
// there) and returns to the original namespace.
func (ns NS) Do(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(netns.NsHandle(ns.FD)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("return to the original netns: %v", err))
		}
	}()
	fn()
}

// Veth adds veth pairs to ns, each pair given as its two names, and
// brings every end up.
func (ns NS) Veth(t testing.TB, pairs ...[2]string) {
	t.Helper()
	for _, p := range pairs {
		Run(t, "", "ip", "-n", ns.Name, "link", "add", p[0], "type", "veth", "peer", "name", p[1])
		for _, end := range p {
			Run(t, "", "ip", "-n", ns.Name, "link", "set", end, "up")
		}
	}
}

// Run runs a command with stdin and fails the test if it fails; it
// returns the combined output.
func Run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr runs a command with stdin and returns its combined output.
func RunErr(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Nft runs nft(8) in ns with stdin.
func (ns NS) Nft(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	return Run(t, stdin, "ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
}

var handleRE = regexp.MustCompile(` # handle \d+`)

// List is `nft list table inet <table>` in ns, without handles.
func (ns NS) List(t testing.TB, table string) string {
	t.Helper()
	return handleRE.ReplaceAllString(ns.Nft(t, "", "list", "table", "inet", table), "")
}

// ListNetlink is the table's rules as netlink expressions (nft
// --debug=netlink), a stricter comparison than the text: it shows every
// expression, register and dependency the kernel holds.
func (ns NS) ListNetlink(t testing.TB, table string) string {
	t.Helper()
	return ns.Nft(t, "", "--debug=netlink", "list", "table", "inet", table)
}

// LiveTable finds, in the namespace named ns, the first of the inet
// tables names that exists and is not dormant (firewall/apply alternates
// its table between two names) and returns its name and listing without
// handles. It looks a few times: a swap between two listings can hide
// both.
func LiveTable(ns string, names ...string) (name, listing string, err error) {
	for try := 0; try < 5; try++ {
		for _, n := range names {
			out, err := RunErr("", "ip", "netns", "exec", ns, "nft", "list", "table", "inet", n)
			if err == nil && !strings.Contains(out, "\n\tflags dormant\n") {
				return n, handleRE.ReplaceAllString(out, ""), nil
			}
		}
	}
	return "", "", fmt.Errorf("none of the tables inet %s is live in %s", strings.Join(names, ", "), ns)
}

// ListLive is LiveTable's listing in ns, failing the test when there is
// none.
func (ns NS) ListLive(t testing.TB, names ...string) string {
	t.Helper()
	_, out, err := LiveTable(ns.Name, names...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
