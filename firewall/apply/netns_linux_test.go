package apply

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

// Test helpers for the live tests: every test programs nftables only in
// network namespaces it creates (and deletes), never the host's.

var nsSeq atomic.Int64

// testNS is a named network namespace (so `ip netns exec` reaches it).
type testNS struct {
	Name string
	FD   int
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and programs nftables in them")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft(8) not found: %v", err)
	}
}

// newNS creates a fresh named network namespace with loopback up. The
// namespace is entered on a locked OS thread only to create it; the thread
// returns to the original namespace before it is unlocked.
func newNS(t *testing.T) testNS {
	t.Helper()
	name := fmt.Sprintf("anvil-apply-%d-%d", os.Getpid(), nsSeq.Add(1))
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
	run(t, "", "ip", "-n", name, "link", "set", "lo", "up")
	return testNS{Name: name, FD: int(h)}
}

// inNS runs fn on a locked OS thread inside ns (for sockets that must
// live there) and returns to the original namespace.
func inNS(t *testing.T, ns testNS, fn func()) {
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

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// nft runs nft(8) in ns.
func (ns testNS) nft(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	return run(t, stdin, "ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
}

var handleRE = regexp.MustCompile(` # handle \d+`)

// list is `nft list table inet <table>` in ns, without handles.
func (ns testNS) list(t *testing.T, table string) string {
	t.Helper()
	return handleRE.ReplaceAllString(ns.nft(t, "", "list", "table", "inet", table), "")
}

// listNetlink is the table's rules as netlink expressions (nft
// --debug=netlink), a stricter comparison than the text: it shows every
// expression, register and dependency the kernel holds.
func (ns testNS) listNetlink(t *testing.T, table string) string {
	t.Helper()
	return ns.nft(t, "", "--debug=netlink", "list", "table", "inet", table)
}
