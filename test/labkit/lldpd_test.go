package labkit

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/lldp"
	"github.com/anvil-metal/anvil/test/netnstest"
)

// TestLabLLDPD: the lab's lldpd, sending on a bridge laid out like the
// lab's, reaches an agent's collector behind a bridge port within a few
// seconds, as LLDPSystemName on port LLDPPortID.
func TestLabLLDPD(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "lablldp")
	// br0 with port va, as the lab's taps; vb, va's peer, is the VM's NIC.
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", ControllerIP + "/24", "dev", "br0"},
		{"link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"link", "set", "va", "master", "br0"},
		{"link", "set", "br0", "up"}, {"link", "set", "va", "up"}, {"link", "set", "vb", "up"},
	} {
		netnstest.Run(t, "", "ip", append([]string{"-n", ns.Name}, args...)...)
	}
	l := &Lab{cfg: Config{Dir: t.TempDir(), Namespace: ns.Name}}
	t.Cleanup(func() {
		for _, f := range []string{l.lldpdSocket(), l.lldpdSocket() + ".lock"} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Error(err)
			}
		}
	})
	// Twice: Down kills lldpd with SIGKILL, which leaves its control
	// socket behind for the next lab.
	for round := 1; round <= 2; round++ {
		hear(t, ns, l)
	}
}

// hear starts listening on vb, as an agent does before its link is up,
// then the lab's lldpd, and waits for its frames; it kills lldpd.
func hear(t *testing.T, ns netnstest.NS, l *Lab) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := lldp.New()
	ns.Do(t, func() {
		if err := c.Listen(ctx, "vb"); err != nil {
			t.Fatal(err)
		}
	})
	if err := l.startLLDPD(); err != nil {
		t.Fatal(err)
	}
	// As Down does: the pid file's process, then the rest of the
	// namespace's (lldpd's privilege-separated child, which holds the
	// control socket's lock until it is gone).
	defer func() {
		pid, err := readPid(filepath.Join(l.cfg.Dir, "lldpd.pid"))
		if err != nil {
			t.Error(err)
			return
		}
		if err := killWait(pid, 5*time.Second); err != nil {
			t.Error(err)
		}
		for _, f := range strings.Fields(netnstest.Run(t, "", "ip", "netns", "pids", ns.Name)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := killWait(pid, 5*time.Second); err != nil {
				t.Error(err)
			}
		}
	}()
	start := time.Now()
	for {
		n := c.Neighbors("vb")
		if len(n) == 1 && n[0].SystemName == LLDPSystemName {
			if n[0].PortId != LLDPPortID || n[0].PortIdSubtype != "interface-name" || n[0].TtlSeconds != 4 ||
				len(n[0].ManagementAddresses) == 0 || n[0].ManagementAddresses[0] != ControllerIP {
				t.Errorf("neighbour %v", n[0])
			}
			t.Logf("heard %s after %v", LLDPSystemName, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 5*time.Second {
			b, _ := os.ReadFile(filepath.Join(l.cfg.Dir, "lldpd.log"))
			t.Fatalf("no neighbour %q within 5 s: %v\nlldpd.log:\n%s", LLDPSystemName, n, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
