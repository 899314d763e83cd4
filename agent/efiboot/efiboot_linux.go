package efiboot

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	efi "github.com/canonical/go-efilib"
	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/agent/blockdev"
)

// Where Linux shows the firmware's variables.
const (
	FirmwareDir = "/sys/firmware/efi"
	VarsDir     = FirmwareDir + "/efivars"
)

// ErrNotUEFI is a machine that did not boot through UEFI (BIOS, or a
// kernel without EFI runtime services): it has no boot entries to keep.
var ErrNotUEFI = errors.New("the machine did not boot through UEFI firmware")

// Option configures Ensure.
type Option func(*options)

type options struct {
	backend efi.VarsBackend
}

// WithVarsBackend reads and writes variables through b instead of efivarfs
// (tests); nothing is mounted.
func WithVarsBackend(b efi.VarsBackend) Option { return func(o *options) { o.backend = b } }

// Ensure makes the firmware boot loader (its path on the ESP,
// slash-separated: EFI/BOOT/BOOTX64.EFI) of partition esp of target (the installed disk)
// right after the network entry, under description (which must start with
// DescriptionPrefix), and reports what it changed. The new entry is
// written before BootOrder names it and stale entries are deleted last, so
// a power cut in between leaves an order whose entries exist. What was
// written is read back: a firmware that refuses or drops a variable is an
// error naming it.
func Ensure(ctx context.Context, target string, esp int, loader, description string, opts ...Option) (string, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.backend != nil {
		ctx = context.WithValue(ctx, efi.VarsBackendKey{}, o.backend)
	} else {
		if err := mountVars(); err != nil {
			return "", err
		}
		ctx = efi.WithDefaultVarsBackend(ctx)
	}
	path, err := diskPath(target, esp, loader)
	if err != nil {
		return "", err
	}
	w := Want{Description: description, Path: path}
	st, err := read(ctx)
	if err != nil {
		return "", err
	}
	p, err := MakePlan(st, w)
	if err != nil {
		return "", err
	}
	if p.Write != nil {
		if err := efi.WriteLoadOptionVariable(ctx, efi.LoadOptionClassBoot, p.Entry, p.Write); err != nil {
			return p.Describe(st, w), fmt.Errorf("write Boot%04X: %w", p.Entry, err)
		}
	}
	if p.Reorder {
		if err := writeOrder(ctx, p.Order); err != nil {
			return p.Describe(st, w), fmt.Errorf("write BootOrder %s: %w", FormatOrder(p.Order), err)
		}
	}
	var errs []error
	for _, n := range p.Delete {
		if err := efi.DeleteLoadOptionVariable(ctx, efi.LoadOptionClassBoot, n); err != nil {
			errs = append(errs, fmt.Errorf("delete stale Boot%04X: %w", n, err))
		}
	}
	if err := verify(ctx, p, w); err != nil {
		errs = append(errs, err)
	}
	return p.Describe(st, w), errors.Join(errs...)
}

// writeOrder writes BootOrder as the UEFI specification lays it out (an
// array of UINT16, non-volatile, boot and runtime access). go-efilib's
// WriteLoadOrderVariable refuses an order naming an entry it cannot read,
// and firmware often keeps such numbers (an entry of a removed device, one
// in a format go-efilib does not decode): they are not anvil's to drop.
func writeOrder(ctx context.Context, order []uint16) error {
	b := make([]byte, 0, 2*len(order))
	for _, n := range order {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return efi.WriteVariable(ctx, "BootOrder", efi.GlobalVariable,
		efi.AttributeNonVolatile|efi.AttributeBootserviceAccess|efi.AttributeRuntimeAccess, b)
}

// verify reads the entry and BootOrder back.
func verify(ctx context.Context, p Plan, w Want) error {
	got, err := efi.ReadLoadOptionVariable(ctx, efi.LoadOptionClassBoot, p.Entry)
	if err != nil {
		return fmt.Errorf("the firmware did not keep Boot%04X: %w", p.Entry, err)
	}
	a, errA := got.FilePath.Bytes()
	b, errB := w.Path.Bytes()
	if errA != nil || errB != nil || string(a) != string(b) || got.Description != w.Description {
		return fmt.Errorf("the firmware changed Boot%04X: %q %s", p.Entry, got.Description, got.FilePath)
	}
	order, err := efi.ReadLoadOrderVariable(ctx, efi.LoadOptionClassBoot)
	if err != nil {
		return fmt.Errorf("read BootOrder back: %w", err)
	}
	if FormatOrder(order) != FormatOrder(p.Order) {
		return fmt.Errorf("the firmware did not keep BootOrder %s: it reads %s", FormatOrder(p.Order), FormatOrder(order))
	}
	return nil
}

// read collects BootCurrent, BootOrder and every Boot#### variable.
func read(ctx context.Context) (State, error) {
	st := State{Options: map[uint16]*efi.LoadOption{}}
	cur, err := efi.ReadBootCurrentVariable(ctx)
	switch {
	case err == nil:
		st.Current, st.HasCurrent = cur, true
	case errors.Is(err, efi.ErrVarNotExist):
	default:
		return st, fmt.Errorf("read BootCurrent: %w", err)
	}
	st.Order, err = efi.ReadLoadOrderVariable(ctx, efi.LoadOptionClassBoot)
	if err != nil && !errors.Is(err, efi.ErrVarNotExist) {
		return st, fmt.Errorf("read BootOrder: %w", err)
	}
	nums, err := efi.ListLoadOptionNumbers(ctx, efi.LoadOptionClassBoot)
	if err != nil {
		return st, fmt.Errorf("list Boot#### variables: %w", err)
	}
	for _, n := range nums {
		o, err := efi.ReadLoadOptionVariable(ctx, efi.LoadOptionClassBoot, n)
		if err != nil {
			// A variable this library cannot decode is not anvil's: keep
			// its number taken and its place in the order.
			o = &efi.LoadOption{Description: fmt.Sprintf("(unreadable: %v)", err)}
		}
		st.Options[n] = o
	}
	return st, nil
}

// diskPath is HD(esp)/loader on target, from its GPT.
func diskPath(target string, esp int, loader string) (efi.DevicePath, error) {
	dev, err := blockdev.OpenBuffered(target, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	hd, err := efi.NewHardDriveDevicePathNodeFromDevice(dev.File, dev.Size, dev.LogicalBlock, esp)
	if err != nil {
		return nil, fmt.Errorf("partition %d of %s for the boot entry: %w", esp, target, err)
	}
	return efi.DevicePath{hd, efi.NewFilePathDevicePathNode(loader)}, nil
}

// mountVars mounts efivarfs where Linux shows it. The agent's initramfs
// loads the efivarfs module at boot (agent/bootenv, with the others).
func mountVars() error {
	if _, err := os.Stat(FirmwareDir); err != nil {
		return ErrNotUEFI
	}
	if mounted(VarsDir) {
		return nil
	}
	if err := unix.Mount("efivarfs", VarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount efivarfs on %s (is the efivarfs module loaded?): %w", VarsDir, err)
	}
	return nil
}

func mounted(dir string) bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[1] == dir {
			return true
		}
	}
	return false
}
