// Package modorder orders Linux kernel modules for loading. It reads each
// module's name and dependencies from the ".modinfo" section of its ELF
// object (the NUL-separated "key=value" strings that modinfo(8) prints and
// depmod(8) turns into modules.dep) and sorts the modules so that every one
// comes after the modules its "depends=" names.
//
// The agent initramfs needs this because Debian's kernel package ships no
// modules.dep for a subset of modules, and finit_module(2) fails with
// "Unknown symbol" when a module is loaded before its dependencies.
package modorder

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sentinel errors of Order and Read.
var (
	// ErrMissing is returned when a module depends on one not in the set.
	ErrMissing = errors.New("dependency not in the module set")
	// ErrCycle is returned when modules depend on each other in a circle.
	ErrCycle = errors.New("dependency cycle")
	// ErrNoModinfo is returned for an ELF object without a .modinfo
	// section or without a name= in it.
	ErrNoModinfo = errors.New("no module name in .modinfo")
)

// Module is one kernel module object.
type Module struct {
	// Name is the module's name as the kernel knows it (name= in modinfo),
	// e.g. "virtio_rng" for virtio-rng.ko.
	Name string
	// Path is the .ko file.
	Path string
	// Depends are the names from depends=, in their order there.
	Depends []string
}

// Modinfo parses the contents of a .modinfo section: NUL-separated
// "key=value" strings. Keys may repeat (alias=, parm=), so every value is
// kept in order. Strings without '=' and empty strings (padding) are
// skipped.
func Modinfo(section []byte) map[string][]string {
	info := make(map[string][]string)
	for _, s := range bytes.Split(section, []byte{0}) {
		k, v, ok := strings.Cut(string(s), "=")
		if !ok || k == "" {
			continue
		}
		info[k] = append(info[k], v)
	}
	return info
}

// splitDepends splits a depends= value ("a,b,c"; empty for none),
// normalising '-' to '_' as the kernel does for module names.
func splitDepends(v string) []string {
	var out []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, normalize(d))
		}
	}
	return out
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Read reads a module's name and dependencies from the ELF object r.
func Read(r io.ReaderAt) (name string, depends []string, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", nil, fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return "", nil, ErrNoModinfo
	}
	data, err := sec.Data()
	if err != nil {
		return "", nil, fmt.Errorf("read .modinfo: %w", err)
	}
	info := Modinfo(data)
	names := info["name"]
	if len(names) == 0 || names[0] == "" {
		return "", nil, ErrNoModinfo
	}
	var deps []string
	for _, v := range info["depends"] {
		deps = append(deps, splitDepends(v)...)
	}
	return normalize(names[0]), deps, nil
}

// ReadFile reads the module in the .ko file at path.
func ReadFile(path string) (Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return Module{}, err
	}
	defer f.Close()
	name, deps, err := Read(f)
	if err != nil {
		return Module{}, fmt.Errorf("module %s: %w", path, err)
	}
	return Module{Name: name, Path: path, Depends: deps}, nil
}

// ReadDir reads every *.ko file in dir (not recursively), sorted by path.
// Compressed modules (.ko.xz, .ko.zst) are refused: the kernel the agent
// runs on cannot decompress them, so they must be unpacked first.
func ReadDir(dir string) ([]Module, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read module directory: %w", err)
	}
	var mods []Module
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".ko.xz"), strings.HasSuffix(n, ".ko.zst"), strings.HasSuffix(n, ".ko.gz"):
			return nil, fmt.Errorf("module %s is compressed: unpack it first", filepath.Join(dir, n))
		case !strings.HasSuffix(n, ".ko") || e.IsDir():
			continue
		}
		m, err := ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		mods = append(mods, m)
	}
	return mods, nil
}

// Order returns mods sorted so that each module follows every module it
// depends on. Among modules whose dependencies are all placed, the one
// earliest by name goes first, so the result depends only on the set, not
// on the input order. A dependency missing from mods is an ErrMissing error
// naming both modules, unless builtin reports it as built into the kernel;
// circular dependencies are an ErrCycle error; two modules with one name
// are an error.
func Order(mods []Module, builtin func(name string) bool) ([]Module, error) {
	byName := make(map[string]Module, len(mods))
	for _, m := range mods {
		if prev, dup := byName[m.Name]; dup {
			return nil, fmt.Errorf("module %s in both %s and %s", m.Name, prev.Path, m.Path)
		}
		byName[m.Name] = m
	}
	pending := make(map[string]int, len(mods)) // unplaced dependencies
	users := make(map[string][]string)         // dependency → modules needing it
	for _, m := range mods {
		seen := make(map[string]bool)
		for _, d := range m.Depends {
			if seen[d] {
				continue
			}
			seen[d] = true
			if _, ok := byName[d]; !ok {
				if builtin != nil && builtin(d) {
					continue
				}
				return nil, fmt.Errorf("module %s needs %s: %w", m.Name, d, ErrMissing)
			}
			pending[m.Name]++
			users[d] = append(users[d], m.Name)
		}
	}
	var ready []string
	for _, m := range mods {
		if pending[m.Name] == 0 {
			ready = append(ready, m.Name)
		}
	}
	out := make([]Module, 0, len(mods))
	for len(ready) > 0 {
		slices.Sort(ready)
		n := ready[0]
		ready = ready[1:]
		out = append(out, byName[n])
		for _, u := range users[n] {
			if pending[u]--; pending[u] == 0 {
				ready = append(ready, u)
			}
		}
	}
	if len(out) != len(mods) {
		var stuck []string
		for _, m := range mods {
			if pending[m.Name] > 0 {
				stuck = append(stuck, m.Name)
			}
		}
		slices.Sort(stuck)
		return nil, fmt.Errorf("modules %s: %w", strings.Join(stuck, ", "), ErrCycle)
	}
	return out, nil
}
