// Package lab runs the lab script (hack/lab.sh) end to end, as `make lab`
// does, in a directory and on a port of its own: the controller and
// host-mode agents on loop devices must reach Ready, and `down` must remove
// every process and loop device it created.
package lab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestLabUpAndDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root for loop devices")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, c := range []string{"anvil-agent", "anvil-controller", "anvilctl"} {
		dir := "./controller/cmd/" + c
		if c == "anvil-agent" {
			dir = "./agent/cmd/anvil-agent"
		}
		build := exec.Command("go", "build", "-o", filepath.Join(bin, c), dir)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	labDir := filepath.Join(t.TempDir(), "lab")
	env := append(os.Environ(), "LAB_DIR="+labDir, "LAB_BIN="+bin, fmt.Sprintf("LAB_PORT=%d", port),
		"LAB_MACHINES=2", "LAB_DISK_MIB=64")
	run := func(arg string) string {
		cmd := exec.Command(filepath.Join(root, "hack/lab.sh"), arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("lab.sh %s: %v\n%s", arg, err, out)
		}
		return string(out)
	}
	var loops []string
	t.Cleanup(func() {
		if _, err := os.Stat(labDir); err == nil {
			run("down")
		}
	})
	out := run("up")
	if !strings.Contains(out, "2 machines Ready") {
		t.Fatalf("lab did not report 2 Ready machines:\n%s", out)
	}
	if n := strings.Count(out, " Ready "); n < 2 {
		t.Fatalf("anvilctl machine ls shows %d Ready machines:\n%s", n, out)
	}
	b, err := os.ReadFile(filepath.Join(labDir, "loops"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		loops = append(loops, strings.Fields(line)[0])
	}
	run("down")
	if _, err := os.Stat(labDir); !os.IsNotExist(err) {
		t.Errorf("lab dir still there after down: %v", err)
	}
	for _, dev := range loops {
		if out, _ := exec.Command("losetup", "-nO", "BACK-FILE", dev).Output(); strings.Contains(string(out), labDir) {
			t.Errorf("%s still attached to the lab's image after down", dev)
		}
	}
}
