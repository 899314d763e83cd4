// Package kexec boots the operating system just written to a disk without
// a trip through the firmware: it finds the installed kernel, initrds and
// command line with agent/bootconfig, loads them with kexec_file_load(2)
// and reboots into them (reboot(2) LINUX_REBOOT_CMD_KEXEC), through
// u-root's pkg/boot/kexec. When that fails, BootOrReboot falls back to a
// firmware reboot and reports both failures. The system calls sit behind
// Syscalls (WithSyscalls, DryRun), so the whole path runs in tests without
// rebooting the host. This file is the pure core; kexec_linux.go holds the
// system calls.
package kexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/anvil-metal/anvil/agent/bootconfig"
)

// Syscalls loads and executes a kernel: kexec_file_load(2) and reboot(2)
// with LINUX_REBOOT_CMD_KEXEC. initrd is nil when there is none.
type Syscalls interface {
	FileLoad(kernel, initrd *os.File, cmdline string) error
	Reboot() error
}

// maxCmdline is the longest command line x86-64 and arm64 kernels take
// (COMMAND_LINE_SIZE 2048, with its terminating NUL).
const maxCmdline = 2047

// Image is what gets loaded.
type Image struct {
	// Boot is the boot configuration found on the disk.
	Boot   bootconfig.Boot
	Kernel []byte
	// Initrd is the initrds concatenated in order (the kernel unpacks
	// concatenated cpio archives as boot loaders pass them); nil when
	// the entry has none.
	Initrd  []byte
	Cmdline string
}

// Describe is a one-line summary for logs.
func (im Image) Describe() string {
	return fmt.Sprintf("%s (kernel %d bytes, initrd %d bytes, cmdline %q)", im.Boot.Describe(), len(im.Kernel), len(im.Initrd), im.Cmdline)
}

func hasConsole(cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "console=") {
			return true
		}
	}
	return false
}

// Cmdline joins the boot configuration's command line and the install's
// extra arguments with one space; each is kept as written inside (quoted
// arguments may hold spaces).
func Cmdline(base, extra string) string {
	base, extra = strings.TrimSpace(base), strings.TrimSpace(extra)
	if base == "" || extra == "" {
		return base + extra
	}
	return base + " " + extra
}

// Prepare reads the boot configuration, kernel and initrds from disk (an
// image file or block device, read-only) and builds the command line: the
// configuration's, console when it names no console, then extra.
func Prepare(disk, extra, console string) (Image, error) {
	b, err := bootconfig.Lookup(disk)
	if err != nil {
		return Image{}, fmt.Errorf("kexec: boot configuration on %s: %w", disk, err)
	}
	base := b.Cmdline
	if !hasConsole(base) {
		base = Cmdline(base, console)
	}
	im := Image{Boot: b, Cmdline: Cmdline(base, extra)}
	if len(im.Cmdline) > maxCmdline {
		return Image{}, fmt.Errorf("kexec: command line of %d bytes, the kernel takes at most %d", len(im.Cmdline), maxCmdline)
	}
	if im.Kernel, err = bootconfig.ReadFile(disk, b.Kernel); err != nil {
		return Image{}, fmt.Errorf("kexec: kernel: %w", err)
	}
	if len(im.Kernel) == 0 {
		return Image{}, fmt.Errorf("kexec: kernel %s on %s is empty", b.Kernel, disk)
	}
	for _, ref := range b.Initrds {
		ir, err := bootconfig.ReadFile(disk, ref)
		if err != nil {
			return Image{}, fmt.Errorf("kexec: initrd: %w", err)
		}
		im.Initrd = append(im.Initrd, ir...)
	}
	return im, nil
}

// Option configures Boot.
type Option func(*options)

type options struct {
	sys     Syscalls
	log     *slog.Logger
	console string
}

// WithSyscalls replaces the kexec system calls (a DryRun in tests).
func WithSyscalls(s Syscalls) Option { return func(o *options) { o.sys = s } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithConsole adds the machine's console= arguments to a command line that
// names no console, so the installed system logs where the agent did.
func WithConsole(args string) Option { return func(o *options) { o.console = args } }

func newOptions(opts []Option) options {
	o := options{sys: kernel{}, log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Boot loads the system installed on disk with extra appended to its
// command line and executes it. It only returns on failure, or with nil
// when the Syscalls' Reboot returns (a DryRun).
func Boot(ctx context.Context, disk, extra string, opts ...Option) error {
	o := newOptions(opts)
	im, err := Prepare(disk, extra, o.console)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o.log.Info("kexec: loading the installed system", "disk", disk, "boot", im.Describe())
	if err := load(o.sys, im); err != nil {
		return fmt.Errorf("kexec: load %s from %s: %w", im.Boot.Kernel, disk, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o.log.Info("kexec: rebooting into the installed system", "disk", disk)
	if err := o.sys.Reboot(); err != nil {
		return fmt.Errorf("kexec: reboot into %s from %s: %w", im.Boot.Kernel, disk, err)
	}
	return nil
}

// BootOrReboot is Boot falling back to reboot (a firmware reboot) when
// kexec fails. It only returns on failure (or after a DryRun); the error
// then names what failed: kexec and, if it failed too, the fallback.
func BootOrReboot(ctx context.Context, disk, extra string, reboot func(context.Context) error, opts ...Option) error {
	kerr := Boot(ctx, disk, extra, opts...)
	if kerr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return kerr
	}
	newOptions(opts).log.Error("kexec failed; rebooting through the firmware", "disk", disk, "err", kerr)
	if rerr := reboot(ctx); rerr != nil {
		return errors.Join(kerr, fmt.Errorf("firmware reboot after the failed kexec: %w", rerr))
	}
	return fmt.Errorf("%w (the firmware reboot returned without rebooting)", kerr)
}

// DryRun is a Syscalls that executes nothing: it keeps what it was given,
// and fails with LoadErr or RebootErr when set.
type DryRun struct {
	LoadErr, RebootErr error

	mu       sync.Mutex
	loaded   *Image
	rebooted bool
}

var _ Syscalls = (*DryRun)(nil)

// FileLoad implements Syscalls, reading the files as the kernel would.
func (d *DryRun) FileLoad(kernel, initrd *os.File, cmdline string) error {
	im := Image{Cmdline: cmdline}
	var err error
	if im.Kernel, err = readAll(kernel); err != nil {
		return err
	}
	if initrd != nil {
		if im.Initrd, err = readAll(initrd); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.LoadErr != nil {
		return d.LoadErr
	}
	d.loaded = &im
	return nil
}

// Reboot implements Syscalls.
func (d *DryRun) Reboot() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.RebootErr != nil {
		return d.RebootErr
	}
	if d.loaded == nil {
		return errors.New("dry run: reboot with no kernel loaded")
	}
	d.rebooted = true
	return nil
}

// Loaded returns the kernel, initrd and command line loaded last (Boot
// empty) and whether the reboot into them was asked for.
func (d *DryRun) Loaded() (im Image, ok, rebooted bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loaded == nil {
		return Image{}, false, d.rebooted
	}
	return *d.loaded, true, d.rebooted
}

// readAll reads a file from its start, as kexec_file_load does.
func readAll(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return b.Bytes(), nil
}
