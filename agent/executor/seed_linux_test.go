package executor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/anvil-metal/anvil/agent/disks"
	"github.com/anvil-metal/anvil/agent/image"
	"github.com/anvil-metal/anvil/agent/image/growpart"
	"github.com/anvil-metal/anvil/agent/seed"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/loopdev"
)

// rootImage is a 16 MiB raw disk image whose GPT has one Linux root
// partition.
func rootImage(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "raw.img")
	d, err := diskfs.Create(p, 16<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 32734, Type: gpt.LinuxRootX86_64, Name: "root"},
	}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seededInstall(t *testing.T, dev string, img []byte, grow growpart.Options, boot func(context.Context, string, *anvilv1.Install) error) *Install {
	allow, err := disks.NewAllowlist([]string{dev})
	if err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Product: &anvilv1.Product{Uuid: "0b1c2d3e-0000-4000-8000-00000000000a"}, Disks: []*anvilv1.Disk{{Path: dev}},
		Nics: []*anvilv1.NIC{{Name: "eth0", Mac: "52:54:00:12:34:56"}, {Name: "ib0", Mac: "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:2c:41"}}}
	return &Install{
		Allow: allow, Inventory: func(context.Context) (*anvilv1.Inventory, error) { return inv, nil },
		Image: image.Options{Grow: grow, Source: func(context.Context, string) (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(img)), int64(len(img)), nil
		}},
		Seed: seed.Writer(),
		Boot: boot,
	}
}

func seededInstruction(img []byte, dev string) *anvilv1.Instruction {
	in := installOf(dev, img)
	in.Id = "in-3"
	s := in.GetInstall()
	s.Hostname, s.SshPublicKeys, s.UserData = "web-1", []string{"ssh-ed25519 AAAAC3Nza k@x"}, "#!/bin/sh\necho hi\n"
	s.PhoneHomeUrl, s.PhoneHomeToken, s.ExtraKernelCmdline = "https://10.0.2.2:8443/v1/phone-home", "tok", "console=ttyS0"
	return in
}

func TestInstallWritesTheSeedBeforeBootingAndHandsTheSpecToBoot(t *testing.T) {
	const size = 256 << 20
	dev := loopdev.New(t, size)
	img := rootImage(t)
	var got *anvilv1.Install
	x := seededInstall(t, dev, img, growpart.Options{Reserve: seed.Reserve, Drop: []string{seed.PartName}},
		func(_ context.Context, _ string, spec *anvilv1.Install) error { got = spec; return nil })
	in := seededInstruction(img, dev)
	out, err := x.Execute(context.Background(), in, &countProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if out.Type != anvilv1.EventType_EVENT_TYPE_BOOTING || !strings.Contains(out.Message, `NoCloud seed p2 "cidata"`) {
		t.Fatalf("outcome %+v", out)
	}
	// The seed is on the disk before the BOOTING event.
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := fat32.Read(file.New(f, true), seed.Size, size-seed.Reserve, 512)
	if err != nil {
		t.Fatal(err)
	}
	md, err := fs.ReadFile(fsys, "meta-data")
	if want := "instance-id: anvil-0b1c2d3e-0000-4000-8000-00000000000a-in-3\nlocal-hostname: web-1\n"; err != nil || string(md) != want {
		t.Errorf("meta-data %q, %v; want %q", md, err, want)
	}
	// The installed system configures the machine's NIC by its MAC.
	if nc, err := fs.ReadFile(fsys, "network-config"); err != nil || !strings.Contains(string(nc), `macaddress: "52:54:00:12:34:56"`) || strings.Contains(string(nc), "c9:03") {
		t.Errorf("network-config %q, %v", nc, err)
	}
	if ph, err := fs.ReadFile(fsys, seed.PhoneHomeFile); err != nil || string(ph) != `{"url":"https://10.0.2.2:8443/v1/phone-home","token":"tok"}`+"\n" {
		t.Errorf("phone-home %q, %v", ph, err)
	}
	if err := out.Then(context.Background()); err != nil || got.GetExtraKernelCmdline() != "console=ttyS0" {
		t.Errorf("Then: %v, boot got %v", err, got)
	}
}

func TestInstallFailsAndDestroysTheTablesWhenTheSeedDoesNotFit(t *testing.T) {
	const size = 64 << 20
	dev := loopdev.New(t, size)
	img := rootImage(t)
	// No reserve: the root partition grows to the disk's end.
	x := seededInstall(t, dev, img, growpart.Options{}, nil)
	_, err := x.Execute(context.Background(), seededInstruction(img, dev), &countProgress{})
	if !errors.Is(err, seed.ErrNoRoom) || !strings.Contains(err.Error(), "destroyed") {
		t.Fatalf("err = %v, want ErrNoRoom and the tables destroyed", err)
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := gpt.Read(f, 512, 512); err == nil {
		t.Error("the disk still has a GPT after the failed install")
	}
}
