package modorder

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// elfObject builds a minimal ELF64 relocatable object whose only contents
// are a .modinfo section holding modinfo, as the kernel's modpost writes it.
func elfObject(t testing.TB, modinfo []byte) []byte {
	t.Helper()
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modOff := uint64(ehsize)
	strOff := modOff + uint64(len(modinfo))
	shOff := strOff + uint64(len(shstr))
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(binary.Write(&b, binary.LittleEndian, h))
	b.Write(modinfo)
	b.Write(shstr)
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: modOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		must(binary.Write(&b, binary.LittleEndian, s))
	}
	return b.Bytes()
}

func TestModinfo(t *testing.T) {
	got := Modinfo([]byte("license=GPL\x00\x00alias=virtio:d00000004v*\x00alias=x\x00depends=virtio,virtio_ring\x00junk\x00=novalue\x00name=virtio_rng\x00"))
	want := map[string][]string{
		"license": {"GPL"},
		"alias":   {"virtio:d00000004v*", "x"},
		"depends": {"virtio,virtio_ring"},
		"name":    {"virtio_rng"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name, modinfo, wantName string
		wantDeps                []string
		wantErr                 error
	}{
		{name: "deps", modinfo: "depends=virtio_ring,virtio,net_failover\x00name=virtio_net\x00", wantName: "virtio_net", wantDeps: []string{"virtio_ring", "virtio", "net_failover"}},
		{name: "no deps", modinfo: "depends=\x00name=virtio_ring\x00", wantName: "virtio_ring"},
		{name: "dash normalised", modinfo: "depends=crc-t10dif\x00name=virtio-rng\x00", wantName: "virtio_rng", wantDeps: []string{"crc_t10dif"}},
		{name: "no name", modinfo: "depends=virtio\x00", wantErr: ErrNoModinfo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, deps, err := Read(bytes.NewReader(elfObject(t, []byte(tc.modinfo))))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if name != tc.wantName || !slices.Equal(deps, tc.wantDeps) {
				t.Errorf("got %q %q, want %q %q", name, deps, tc.wantName, tc.wantDeps)
			}
		})
	}
	if _, _, err := Read(bytes.NewReader([]byte("not an ELF file at all, but long enough to read a header from it"))); err == nil {
		t.Error("Read accepted a non-ELF file")
	}
}

func mods(spec ...string) []Module {
	var out []Module
	for _, s := range spec {
		name, deps, _ := strings.Cut(s, ":")
		m := Module{Name: name, Path: name + ".ko"}
		if deps != "" {
			m.Depends = strings.Split(deps, ",")
		}
		out = append(out, m)
	}
	return out
}

func names(ms []Module) string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return strings.Join(n, " ")
}

func TestOrder(t *testing.T) {
	// The dependency graph of Debian 12's cloud kernel virtio modules.
	virtio := mods("virtio_net:virtio_ring,virtio,net_failover", "virtio_pci:virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
		"virtio_blk:virtio,virtio_ring", "net_failover:failover", "virtio:virtio_ring", "failover", "virtio_pci_legacy_dev",
		"virtio_pci_modern_dev", "virtio_ring", "virtio_scsi:scsi_mod,virtio_ring,virtio", "scsi_mod:scsi_common", "scsi_common",
		"sd_mod:scsi_mod", "virtio_rng:virtio,virtio_ring")
	for _, tc := range []struct {
		name    string
		in      []Module
		builtin []string
		want    string
		wantErr error
	}{
		{name: "empty", want: ""},
		{name: "independent sorted by name", in: mods("b", "c", "a"), want: "a b c"},
		{name: "chain", in: mods("c:b", "b:a", "a"), want: "a b c"},
		{name: "diamond", in: mods("d:b,c", "c:a", "b:a", "a"), want: "a b c d"},
		{name: "repeated dependency", in: mods("b:a,a", "a"), want: "a b"},
		{name: "virtio", in: virtio, want: "failover net_failover scsi_common scsi_mod sd_mod virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_blk virtio_net virtio_pci virtio_rng virtio_scsi"},
		{name: "missing", in: mods("b:a"), wantErr: ErrMissing},
		{name: "missing but builtin", in: mods("b:a"), builtin: []string{"a"}, want: "b"},
		{name: "cycle", in: mods("a:b", "b:a", "c"), wantErr: ErrCycle},
		{name: "self cycle", in: mods("a:a"), wantErr: ErrCycle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Order(tc.in, func(n string) bool { return slices.Contains(tc.builtin, n) })
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && names(got) != tc.want {
				t.Errorf("order %q, want %q", names(got), tc.want)
			}
			// Every module follows its dependencies, whatever the input order.
			rev := slices.Clone(tc.in)
			slices.Reverse(rev)
			if again, err := Order(rev, func(n string) bool { return slices.Contains(tc.builtin, n) }); err == nil && names(again) != names(got) {
				t.Errorf("reversed input gives %q, want %q", names(again), names(got))
			}
		})
	}
	if _, err := Order(mods("a", "a"), nil); err == nil {
		t.Error("two modules named a were accepted")
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	for name, info := range map[string]string{
		"virtio.ko":      "depends=virtio_ring\x00name=virtio\x00",
		"virtio_ring.ko": "depends=\x00name=virtio_ring\x00",
		"virtio-rng.ko":  "depends=virtio,virtio_ring\x00name=virtio_rng\x00",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), elfObject(t, []byte(info)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "order"), []byte("not a module\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Order(ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := names(got); n != "virtio_ring virtio virtio_rng" {
		t.Errorf("order %q", n)
	}
	if err := os.WriteFile(filepath.Join(dir, "x.ko.xz"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDir(dir); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Errorf("compressed module: err = %v", err)
	}
}

// TestDebianCloudKernel orders the real modules hack/fetch-kernel.sh
// fetched; make test fetches them (make kernel) before it runs the tests.
func TestDebianCloudKernel(t *testing.T) {
	cache := os.Getenv("ANVIL_CACHE")
	if cache == "" {
		cache = "/var/cache/anvil"
	}
	dir := filepath.Join(cache, "kernel", "modules")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("no fetched kernel modules in %s (make test fetches them first; by hand: hack/fetch-kernel.sh %s): %v", dir, filepath.Dir(dir), err)
	}
	ms, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Order(ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	pos := make(map[string]int)
	for i, m := range got {
		pos[m.Name] = i
	}
	for _, m := range got {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s at %d before its dependency %s at %d", m.Name, pos[m.Name], d, pos[d])
			}
		}
	}
	for _, want := range []string{"virtio_ring", "virtio_pci", "virtio_net", "virtio_blk"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("%s missing from %s", want, names(got))
		}
	}
	t.Logf("load order: %s", names(got))
}

func FuzzRead(f *testing.F) {
	f.Add([]byte("depends=a,b\x00name=c\x00"))
	f.Add([]byte("name=\x00"))
	f.Fuzz(func(t *testing.T, modinfo []byte) {
		name, deps, err := Read(bytes.NewReader(elfObject(t, modinfo)))
		if err != nil {
			return
		}
		if name == "" || strings.Contains(name, "-") {
			t.Errorf("name %q", name)
		}
		for _, d := range deps {
			if d == "" || strings.Contains(d, ",") {
				t.Errorf("dependency %q", d)
			}
		}
	})
}
