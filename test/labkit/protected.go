package labkit

import (
	"bytes"
	"fmt"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// protectedMiB is the size of a VM's protected NVMe namespace.
const protectedMiB = 64

// protectedPattern fills the protected namespace past its partition table.
func protectedPattern() []byte {
	return bytes.Repeat([]byte("anvil-lab protected namespace: never erased\n"), (protectedMiB-2)<<20/44)
}

// writeProtected creates the protected namespace's file: a GPT with one
// partition named anvil-protected (the agent's default protect label) and
// a known pattern from 1 MiB on.
func writeProtected(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	d, err := diskfs.Create(path, protectedMiB<<20, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("protected namespace %s: %w", path, err)
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: (protectedMiB-1)<<20/512 - 1, Type: gpt.LinuxFilesystem, Name: "anvil-protected"}}}
	if err := d.Partition(tbl); err != nil {
		d.Close()
		return fmt.Errorf("protected namespace %s: %w", path, err)
	}
	if err := d.Close(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(protectedPattern(), 1<<20); err != nil {
		f.Close()
		return fmt.Errorf("protected namespace %s: %w", path, err)
	}
	return f.Close()
}

// ProtectedIntact checks that vm's protected namespace still holds its
// partition table and its pattern.
func ProtectedIntact(vm *VM) error {
	b, err := os.ReadFile(vm.Protected)
	if err != nil {
		return err
	}
	if len(b) != protectedMiB<<20 {
		return fmt.Errorf("protected namespace of VM %d: %d bytes, want %d", vm.Index, len(b), protectedMiB<<20)
	}
	if string(b[512:520]) != "EFI PART" {
		return fmt.Errorf("protected namespace of VM %d lost its GPT header", vm.Index)
	}
	p := protectedPattern()
	if !bytes.Equal(b[1<<20:1<<20+len(p)], p) {
		i := 0
		for i < len(p) && b[1<<20+i] == p[i] {
			i++
		}
		return fmt.Errorf("protected namespace of VM %d changed at byte %d", vm.Index, 1<<20+i)
	}
	return nil
}
