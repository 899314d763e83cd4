package inventory

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	machineA   = "testdata/machine-a"
	testPCIIDs = "testdata/pci.ids"
	// hostSnapshot is a ghw snapshot of the machine the package was
	// developed on (see TestUpdateHostSnapshot).
	hostSnapshot = "testdata/host-snapshot.tar.gz"
)

// goldenJSON renders inv as deterministic, indented protojson with every
// field present. protojson varies its whitespace on purpose; re-indenting
// through encoding/json makes it stable.
func goldenJSON(t *testing.T, inv *anvilv1.Inventory) []byte {
	t.Helper()
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// checkGolden compares inv with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, inv *anvilv1.Inventory, golden string) {
	t.Helper()
	got := goldenJSON(t, inv)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("inventory differs from %s at line %d:\n got: %s\nwant: %s\n(run go test -update if the change is intended)", golden, i+1, g, w)
		}
	}
}

// copyTree copies the fixture tree src, symlinks included, into a temporary
// directory that the test may modify.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// ghwModuleDir finds the ghw module in the module cache: through the go
// command, else through the build info and GOMODCACHE.
func ghwModuleDir(t *testing.T) string {
	t.Helper()
	const mod = "github.com/jaypipes/ghw"
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		cache := os.Getenv("GOMODCACHE")
		if cache == "" {
			if home, err := os.UserHomeDir(); err == nil {
				cache = filepath.Join(home, "go", "pkg", "mod")
			}
		}
		for _, d := range bi.Deps {
			if d.Path == mod {
				dir := filepath.Join(cache, mod+"@"+d.Version)
				if _, err := os.Stat(dir); err == nil {
					return dir
				}
			}
		}
	}
	t.Skip("the ghw module directory was not found (neither `go list -m` nor GOMODCACHE); cannot test on ghw's snapshots")
	return ""
}
