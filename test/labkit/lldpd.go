package labkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// LLDPSystemName is the system name the lab's switch announces: Debian's
// lldpd on the bridge, whose LLDP frames go out of every tap. Every lab
// agent's NIC lists a neighbour of this name (and port ID LLDPPortID) in
// its inventory.
const LLDPSystemName = "anvil-lab-switch"

// LLDPPortID is the port ID the lab's switch announces (the bridge's
// name, port ID subtype "interface-name").
const LLDPPortID = "br0"

// lldpdConfig is what lldpcli tells the lab's lldpd once it runs: one
// frame a second, so an agent hears the switch within a second or two of
// listening (TTL 4 s), a port ID by interface name, and its name last:
// lldpd sends a frame at each change, so the first frame that carries the
// name carries the rest too.
var lldpdConfig = []string{
	"configure lldp tx-interval 1",
	"configure lldp portidsubtype ifname",
	"configure system description anvil lab switch (lldpd on the lab bridge)",
	"configure system hostname " + LLDPSystemName,
}

// lldpdSocket is the control socket of the lab's lldpd. It is not in the
// lab's directory: lldpd drops its privileges to the _lldpd user, which
// must reach the socket, and the directory's parents may be private (a
// test's temporary directory). lldpd replaces a stale one.
func (l *Lab) lldpdSocket() string { return "/run/" + l.cfg.Namespace + "-lldpd.socket" }

// startLLDPD runs Debian's lldpd in the namespace, sending on the bridge
// (-I br0: an exact name passes lldpd's check for physical interfaces),
// and configures it with lldpcli through its control socket. It is started
// without lldpcli (-L ""), which as the _lldpd user could not read a
// configuration in the lab's directory; its first frames carry the host's
// name until the configuration applies, long before any VM listens.
func (l *Lab) startLLDPD() error {
	for _, tool := range []string{"lldpd", "lldpcli"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s (Debian package lldpd, hack/install-deps.sh): %w", tool, err)
		}
	}
	sock := l.lldpdSocket()
	if err := l.spawn(filepath.Join(l.cfg.Dir, "lldpd.pid"), filepath.Join(l.cfg.Dir, "lldpd.log"),
		"lldpd", "-d", "-L", "", "-u", sock, "-p", filepath.Join(l.cfg.Dir, "lldpd.pidfile"), "-I", "br0"); err != nil {
		return err
	}
	var out []byte
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cmd := exec.Command("lldpcli", "-u", sock)
		cmd.Stdin = strings.NewReader(strings.Join(lldpdConfig, "\n") + "\n")
		if out, err = cmd.CombinedOutput(); err == nil {
			return nil
		}
	}
	logf := filepath.Join(l.cfg.Dir, "lldpd.log")
	b, _ := os.ReadFile(logf)
	return fmt.Errorf("configure the lab's lldpd through %s: %w: %s\n%s:\n%s", sock, err, out, logf, b)
}
