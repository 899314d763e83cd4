// Package bootconfig finds the kernel, initrd and command line of an
// operating system written to a disk, so the agent can kexec into it. It
// reads, in order of preference: an anvil manifest (anvil/boot.json), Boot
// Loader Specification Type #1 entries (UAPI group BLS: loader/entries/
// *.conf), GRUB 2's grub.cfg (the default menuentry's linux and initrd
// lines) and SYSLINUX/extlinux configuration (DEFAULT label, KERNEL/LINUX,
// INITRD, APPEND). This file is the pure core over io/fs; disk.go opens
// the partitions of a real disk.
package bootconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Partition is one filesystem of the disk.
type Partition struct {
	// Index is the partition number (1-based).
	Index int
	FS    fs.FS
}

// FileRef names a file on a partition.
type FileRef struct {
	Partition int
	Path      string
}

func (r FileRef) String() string { return fmt.Sprintf("p%d:/%s", r.Partition, r.Path) }

// Boot is what to kexec.
type Boot struct {
	Kernel  FileRef
	Initrds []FileRef
	Cmdline string
	Title   string
	// Source is the configuration it came from, e.g. "grub p2:/boot/grub/grub.cfg".
	Source string
}

// Describe is a one-line summary for events.
func (b Boot) Describe() string {
	var ir []string
	for _, r := range b.Initrds {
		ir = append(ir, r.String())
	}
	return fmt.Sprintf("%s %q: kernel %s initrd %s cmdline %q", b.Source, b.Title, b.Kernel, strings.Join(ir, ","), b.Cmdline)
}

// Entry is one boot entry of a configuration, paths as written.
type Entry struct {
	Title, Version string
	Kernel         string
	Initrds        []string
	Cmdline        string
}

// ErrNotFound is a disk with no usable boot configuration.
var ErrNotFound = errors.New("no bootable kernel found")

// Find looks for the boot configuration on the partitions.
func Find(parts []Partition) (Boot, error) {
	var why []string
	finders := []func([]Partition, Partition) ([]candidate, error){fromManifest, fromBLS, fromGrub, fromExtlinux}
	for _, find := range finders {
		for _, p := range parts {
			cands, err := find(parts, p)
			if err != nil {
				why = append(why, err.Error())
			}
			for _, c := range cands {
				b, err := resolve(parts, p, c)
				if err != nil {
					why = append(why, err.Error())
					continue
				}
				return b, nil
			}
		}
	}
	if len(why) == 0 {
		why = append(why, "no anvil/boot.json, loader/entries/*.conf, grub.cfg or extlinux.conf on any partition")
	}
	return Boot{}, fmt.Errorf("%w on %d partitions: %s", ErrNotFound, len(parts), strings.Join(why, "; "))
}

type candidate struct {
	Entry
	source string
}

// resolve finds the entry's files: on the configuration's partition first,
// then on the others; as written, and with "boot/" stripped or added (a
// separate /boot partition).
func resolve(parts []Partition, home Partition, c candidate) (Boot, error) {
	if c.Kernel == "" {
		return Boot{}, fmt.Errorf("%s entry %q has no kernel", c.source, c.Title)
	}
	k, err := locate(parts, home, c.Kernel)
	if err != nil {
		return Boot{}, fmt.Errorf("%s entry %q: kernel %s: %w", c.source, c.Title, c.Kernel, err)
	}
	b := Boot{Kernel: k, Cmdline: c.Cmdline, Title: c.Title, Source: c.source}
	for _, ir := range c.Initrds {
		r, err := locate(parts, home, ir)
		if err != nil {
			return Boot{}, fmt.Errorf("%s entry %q: initrd %s: %w", c.source, c.Title, ir, err)
		}
		b.Initrds = append(b.Initrds, r)
	}
	return b, nil
}

func locate(parts []Partition, home Partition, p string) (FileRef, error) {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	alts := []string{p, "boot/" + p}
	if rest, ok := strings.CutPrefix(p, "boot/"); ok {
		alts = []string{p, rest}
	}
	order := append([]Partition{home}, parts...)
	for _, part := range order {
		for _, a := range alts {
			if st, err := fs.Stat(part.FS, a); err == nil && st.Mode().IsRegular() {
				return FileRef{Partition: part.Index, Path: a}, nil
			}
		}
	}
	return FileRef{}, fs.ErrNotExist
}

func fromManifest(_ []Partition, p Partition) ([]candidate, error) {
	b, err := fs.ReadFile(p.FS, "anvil/boot.json")
	if err != nil {
		return nil, nil
	}
	var m struct {
		Kernel  string   `json:"kernel"`
		Initrd  string   `json:"initrd"`
		Initrds []string `json:"initrds"`
		Cmdline string   `json:"cmdline"`
		Title   string   `json:"title"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest p%d:/anvil/boot.json: %w", p.Index, err)
	}
	e := Entry{Title: m.Title, Kernel: m.Kernel, Cmdline: m.Cmdline, Initrds: m.Initrds}
	if m.Initrd != "" {
		e.Initrds = append([]string{m.Initrd}, e.Initrds...)
	}
	return []candidate{{e, fmt.Sprintf("manifest p%d:/anvil/boot.json", p.Index)}}, nil
}

// ParseBLS parses one BLS Type #1 entry.
func ParseBLS(conf string) Entry {
	var e Entry
	var opts []string
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch key {
		case "title":
			e.Title = val
		case "version":
			e.Version = val
		case "linux":
			e.Kernel = val
		case "initrd":
			e.Initrds = append(e.Initrds, val)
		case "options":
			opts = append(opts, val)
		}
	}
	e.Cmdline = strings.Join(opts, " ")
	return e
}

// VersionLess compares versions as the BLS sorts them: runs of digits
// numerically, everything else as text.
func VersionLess(a, b string) bool {
	for a != "" && b != "" {
		ra, rb := run(a), run(b)
		if ra != rb {
			na, ea := strconv.ParseUint(ra, 10, 64)
			nb, eb := strconv.ParseUint(rb, 10, 64)
			if ea == nil && eb == nil {
				return na < nb
			}
			return ra < rb
		}
		a, b = a[len(ra):], b[len(rb):]
	}
	return len(a) < len(b)
}

func run(s string) string {
	digit := unicode.IsDigit(rune(s[0]))
	i := 1
	for i < len(s) && unicode.IsDigit(rune(s[i])) == digit {
		i++
	}
	return s[:i]
}

func fromBLS(_ []Partition, p Partition) ([]candidate, error) {
	for _, dir := range []string{"loader", "boot/loader"} {
		names, err := fs.Glob(p.FS, dir+"/entries/*.conf")
		if err != nil || len(names) == 0 {
			continue
		}
		type named struct {
			id string
			e  Entry
		}
		var es []named
		for _, n := range names {
			b, err := fs.ReadFile(p.FS, n)
			if err != nil {
				return nil, fmt.Errorf("bls p%d:/%s: %w", p.Index, n, err)
			}
			e := ParseBLS(string(b))
			if e.Version == "" {
				e.Version = strings.TrimSuffix(path.Base(n), ".conf")
			}
			es = append(es, named{strings.TrimSuffix(path.Base(n), ".conf"), e})
		}
		// Highest version first; loader.conf's default (a glob) wins.
		sort.SliceStable(es, func(i, j int) bool { return VersionLess(es[j].e.Version, es[i].e.Version) })
		if lc, err := fs.ReadFile(p.FS, dir+"/loader.conf"); err == nil {
			for _, line := range strings.Split(string(lc), "\n") {
				if k, v, _ := strings.Cut(strings.TrimSpace(line), " "); k == "default" {
					pat := strings.TrimSuffix(strings.TrimSpace(v), ".conf")
					sort.SliceStable(es, func(i, j int) bool {
						mi, _ := path.Match(pat, es[i].id)
						mj, _ := path.Match(pat, es[j].id)
						return mi && !mj
					})
				}
			}
		}
		var out []candidate
		for _, e := range es {
			out = append(out, candidate{e.e, fmt.Sprintf("bls p%d:/%s/entries/%s.conf", p.Index, dir, e.id)})
		}
		return out, nil
	}
	return nil, nil
}

// ParseGrub extracts the menu entries of a grub.cfg and the index of the
// default one, numbered as GRUB numbers the top level: a submenu counts as
// one item, standing for its first entry. It understands top-level
// `set var=value` (with `set default=` an index or a title), menuentry
// blocks and their linux/linuxefi and initrd/initrdefi lines, with $var and
// ${var} expanded.
func ParseGrub(cfg string) ([]Entry, int) {
	vars := map[string]string{}
	var entries []Entry
	cur := -1 // entry receiving linux/initrd lines
	depth := 0
	sub, subFilled := -1, false // open top-level submenu
	def := "0"
	expand := func(s string) string {
		return strings.TrimSpace(os.Expand(s, func(k string) string { return vars[k] }))
	}
	for _, raw := range strings.Split(cfg, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		opens := strings.HasSuffix(line, "{")
		switch {
		case fields[0] == "submenu" && depth == 0:
			entries = append(entries, Entry{Title: grubTitle(line, "submenu")})
			sub, subFilled, cur = len(entries)-1, false, -1
		case fields[0] == "menuentry":
			switch {
			case depth == 0:
				entries = append(entries, Entry{Title: grubTitle(line, "menuentry")})
				cur = len(entries) - 1
			case sub >= 0 && !subFilled:
				entries[sub].Title += ">" + grubTitle(line, "menuentry")
				cur, subFilled = sub, true
			default:
				cur = -1
			}
		case line == "}":
			depth--
			if depth <= 0 {
				depth, cur, sub = 0, -1, -1
			} else if sub >= 0 && depth == 1 {
				cur = -1
			}
			continue
		case cur >= 0 && (fields[0] == "linux" || fields[0] == "linuxefi" || fields[0] == "linux16") && len(fields) > 1:
			entries[cur].Kernel = expand(fields[1])
			entries[cur].Cmdline = expand(strings.Join(fields[2:], " "))
		case cur >= 0 && (fields[0] == "initrd" || fields[0] == "initrdefi" || fields[0] == "initrd16"):
			for _, f := range fields[1:] {
				entries[cur].Initrds = append(entries[cur].Initrds, expand(f))
			}
		case fields[0] == "set" && len(fields) > 1 && depth == 0:
			if k, v, ok := strings.Cut(strings.Join(fields[1:], " "), "="); ok {
				v = strings.Trim(v, `"'`)
				vars[k] = v
				if k == "default" {
					def = v
				}
			}
		}
		if opens {
			depth++
		}
	}
	idx := 0
	if n, err := strconv.Atoi(strings.TrimSpace(def)); err == nil {
		idx = n
	} else {
		for i, e := range entries {
			if e.Title == def || strings.HasPrefix(e.Title, def+">") {
				idx = i
				break
			}
		}
	}
	if idx < 0 || idx >= len(entries) {
		idx = 0
	}
	return entries, idx
}

func grubTitle(line, keyword string) string {
	rest := strings.TrimSpace(strings.TrimPrefix(line, keyword))
	if rest == "" {
		return ""
	}
	if q := rest[0]; q == '\'' || q == '"' {
		if end := strings.IndexByte(rest[1:], q); end >= 0 {
			return rest[1 : end+1]
		}
	}
	return strings.Fields(rest)[0]
}

func fromGrub(_ []Partition, p Partition) ([]candidate, error) {
	paths := []string{"boot/grub/grub.cfg", "grub/grub.cfg", "boot/grub2/grub.cfg", "grub2/grub.cfg"}
	if efi, err := fs.Glob(p.FS, "EFI/*/grub.cfg"); err == nil {
		paths = append(paths, efi...)
	}
	for _, cfgPath := range paths {
		b, err := fs.ReadFile(p.FS, cfgPath)
		if err != nil {
			continue
		}
		entries, def := ParseGrub(string(b))
		if len(entries) == 0 {
			return nil, fmt.Errorf("grub p%d:/%s has no menuentry", p.Index, cfgPath)
		}
		order := append([]Entry{entries[def]}, append(entries[:def:def], entries[def+1:]...)...)
		var out []candidate
		for _, e := range order {
			out = append(out, candidate{e, fmt.Sprintf("grub p%d:/%s", p.Index, cfgPath)})
		}
		return out, nil
	}
	return nil, nil
}

// ParseExtlinux parses an extlinux.conf/syslinux.cfg: its LABEL entries and
// the index of DEFAULT (first entry when absent or unknown).
func ParseExtlinux(cfg string) ([]Entry, int) {
	var entries []Entry
	var labels []string
	def := ""
	for _, raw := range strings.Split(cfg, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch strings.ToUpper(key) {
		case "DEFAULT":
			def = val
		case "LABEL":
			entries = append(entries, Entry{Title: val})
			labels = append(labels, val)
		case "KERNEL", "LINUX":
			if n := len(entries); n > 0 {
				entries[n-1].Kernel = val
			}
		case "INITRD":
			if n := len(entries); n > 0 {
				entries[n-1].Initrds = append(entries[n-1].Initrds, strings.Split(val, ",")...)
			}
		case "APPEND":
			if n := len(entries); n > 0 {
				var keep []string
				for _, f := range strings.Fields(val) {
					if ir, ok := strings.CutPrefix(f, "initrd="); ok {
						entries[n-1].Initrds = append(entries[n-1].Initrds, strings.Split(ir, ",")...)
						continue
					}
					keep = append(keep, f)
				}
				entries[n-1].Cmdline = strings.Join(keep, " ")
			}
		}
	}
	idx := 0
	for i, l := range labels {
		if l == def {
			idx = i
		}
	}
	return entries, idx
}

func fromExtlinux(_ []Partition, p Partition) ([]candidate, error) {
	for _, cfgPath := range []string{"boot/extlinux/extlinux.conf", "extlinux/extlinux.conf", "syslinux/syslinux.cfg", "boot/syslinux/syslinux.cfg"} {
		b, err := fs.ReadFile(p.FS, cfgPath)
		if err != nil {
			continue
		}
		entries, def := ParseExtlinux(string(b))
		if len(entries) == 0 {
			return nil, fmt.Errorf("extlinux p%d:/%s has no LABEL", p.Index, cfgPath)
		}
		order := append([]Entry{entries[def]}, append(entries[:def:def], entries[def+1:]...)...)
		var out []candidate
		for _, e := range order {
			out = append(out, candidate{e, fmt.Sprintf("extlinux p%d:/%s", p.Index, cfgPath)})
		}
		return out, nil
	}
	return nil, nil
}
