package qemu

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCommand(t *testing.T) {
	vars := filepath.Join(t.TempDir(), "vars.fd")
	o := Options{
		Name: "vm1", Accel: "tcg", MemoryMiB: 768, CPUs: 2, Console: "/tmp/c.log", NoReboot: true, RTC: "2001-01-01T00:00:00",
		Firmware: Firmware{UEFI: true, Vars: vars},
		Devices: []Device{
			QMP{Socket: "/tmp/q.sock", StartOff: true},
			NIC{Net: Tap{Ifname: "tap1"}, MAC: "52:54:00:00:00:01", ROM: NoROM, BootIndex: 1, Speed: true},
			Disk{ID: "nv0", File: "/d/nv.img", Serial: "NV1", NVMe: true, BootIndex: 2, Unsafe: true},
			RNG{},
		},
	}
	got, err := o.Command()
	if err != nil {
		t.Fatal(err)
	}
	want := "qemu-system-x86_64 -name vm1 -machine pc -accel tcg -cpu max -m 768 -smp 2 -nodefaults -no-user-config -display none " +
		"-serial file:/tmp/c.log -no-reboot -rtc base=2001-01-01T00:00:00 " +
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=" + vars + " " +
		"-qmp unix:/tmp/q.sock,server=on,wait=off -no-shutdown -S " +
		"-netdev tap,id=nic0-net,ifname=tap1,script=no,downscript=no -device virtio-net-pci,id=nic0,netdev=nic0-net,mac=52:54:00:00:00:01,romfile=,speed=10000,duplex=full,bootindex=1 " +
		"-drive file=/d/nv.img,if=none,id=nv0-drive,format=raw,cache=unsafe -device nvme,id=nv0,drive=nv0-drive,serial=NV1,bootindex=2 " +
		"-device virtio-rng-pci"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("command\n got %s\nwant %s", g, want)
	}
}

func TestNVMeNamespaces(t *testing.T) {
	d := Disk{ID: "nv0", File: "/d/ns1.img", Namespaces: []string{"/d/ns2.img"}, Serial: "NV1", NVMe: true, BootIndex: 2, Unsafe: true}
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	want := "-device nvme,id=nv0,serial=NV1 " +
		"-drive file=/d/ns1.img,if=none,id=nv0-ns1,format=raw,cache=unsafe -device nvme-ns,drive=nv0-ns1,bus=nv0,nsid=1,bootindex=2 " +
		"-drive file=/d/ns2.img,if=none,id=nv0-ns2,format=raw,cache=unsafe -device nvme-ns,drive=nv0-ns2,bus=nv0,nsid=2"
	if got := strings.Join(d.Args(), " "); got != want {
		t.Errorf("args\n got %s\nwant %s", got, want)
	}
	if err := (Disk{ID: "vd0", File: "/d/a", Namespaces: []string{"/d/b"}}).validate(); err == nil {
		t.Error("namespaces on a virtio disk validated")
	}
}

func TestValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"accel":            {Accel: "hvf"},
		"uefi no vars":     {Firmware: Firmware{UEFI: true}},
		"initrd no kernel": {Initrd: "/x"},
		"nic no netdev":    {Devices: []Device{NIC{}}},
		"disk comma":       {Devices: []Device{Disk{ID: "d", File: "/a,b"}}},
	} {
		if _, err := o.Command(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestBootsSeaBIOSAndOVMF powers on a VM with each firmware and no disk:
// SeaBIOS announces itself on the debug console, OVMF on the serial one.
func TestBootsSeaBIOSAndOVMF(t *testing.T) {
	dir := t.TempDir()
	vars := filepath.Join(dir, "vars.fd")
	if err := EnsureVars(vars); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fw   Firmware
		file string
		re   string
	}{
		{Firmware{}, filepath.Join(dir, "seabios.log"), `SeaBIOS \(version`},
		{Firmware{UEFI: true, Vars: vars}, filepath.Join(dir, "uefi.log"), `BdsDxe|UEFI|EFI`},
	} {
		t.Run(tc.fw.Name(), func(t *testing.T) {
			t.Parallel()
			o := Options{Name: tc.fw.Name(), Firmware: tc.fw, Console: filepath.Join(t.TempDir(), "console.log"), MemoryMiB: 128}
			read := o.Console
			if !tc.fw.UEFI {
				o.Devices = []Device{DebugCon{File: tc.file}}
				read = tc.file
			}
			v := StartT(t, o)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			re := regexp.MustCompile(tc.re)
			for {
				b, _ := os.ReadFile(read)
				if re.Match(b) {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("no %q in %s: %s", tc.re, read, b)
				case <-v.Exited():
					t.Fatalf("QEMU exited: %v %s", v.Err(), v.Output())
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	// A VM's store is its own: EnsureVars keeps what is there.
	mark := append(before[:len(before)-1:len(before)-1], 0x5a)
	if err := os.WriteFile(vars, mark, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := EnsureVars(vars); err != nil {
		t.Fatal(err)
	}
	if after, err := os.ReadFile(vars); err != nil || after[len(after)-1] != 0x5a {
		t.Errorf("EnsureVars replaced an existing store (%v)", err)
	}
}
