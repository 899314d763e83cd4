// Package initramfs assembles the agent initramfs: a Linux initial RAM file
// system (the kernel's "newc" cpio format, Documentation/filesystems/
// ramfs-rootfs-initramfs.rst) that boots straight into anvil-agent.
//
// The archive is built by u-root's builder (pinned as a Go tool of this
// module) with u-root's init as /init and anvil-agent --mode boot as its
// uinit, in one busybox-style binary, together with u-root's gosh shell and
// a few core tools (DebugCommands). The shell never runs unless the kernel
// command line says anvil.debug=1: then the agent starts it on the console
// beside its own log (agent/bootenv.StartDebugShell). Next to them it
// holds
//
//   - the kernel modules the agent loads itself, under /lib/anvil/modules
//     with an "order" file sorted by their depends= (package modorder);
//     they are kept out of /lib/modules, whose modules u-root's init loads
//     alphabetically, which fails with "Unknown symbol";
//   - a CA bundle at /etc/ssl/certs/ca-certificates.crt for HTTPS image
//     sources;
//   - GRUB's images for UEFI and BIOS (agent/bootloader/mkgrub) under
//     /lib/anvil/grub, which the agent installs with root filesystem
//     tarballs so those disks boot by themselves.
//
// u-root writes every record with zero mtime, uid, gid and inode and Go
// builds with -trimpath and an empty build id, so the same inputs give the
// same archive; it is compressed with zstd by a single-threaded encoder, so
// the same archive gives the same bytes. Build refuses an image above the
// size budget.
package initramfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/anvil-metal/anvil/agent/bootloader"
	"github.com/anvil-metal/anvil/agent/bootloader/mkgrub"
	"github.com/anvil-metal/anvil/initramfs/modorder"
)

// Paths inside the image.
const (
	ModulesDir = "lib/anvil/modules"
	OrderFile  = "order"
	CABundle   = "etc/ssl/certs/ca-certificates.crt"
	// AgentPackage is the agent's main package; its version variable is
	// set through the linker.
	AgentPackage = "github.com/anvil-metal/anvil/agent/cmd/anvil-agent"
	// InitPackage is u-root's init.
	InitPackage = "github.com/u-root/u-root/cmds/core/init"
	// DebugShell is where the debug shell lands in the image.
	DebugShell = "/bbin/gosh"
)

// DebugCommands are the u-root commands of the debug shell: gosh and what
// one needs to look at a machine that does not provision.
func DebugCommands() []string {
	var out []string
	for _, c := range []string{"gosh", "ls", "cat", "ip", "dmesg", "ps", "mount", "lsmod", "blkid", "hexdump", "ping", "free", "df", "kill", "wget", "dd", "mkdir", "rm"} {
		out = append(out, "github.com/u-root/u-root/cmds/core/"+c)
	}
	return out
}

// ErrOverBudget is returned when the compressed image exceeds MaxBytes.
var ErrOverBudget = errors.New("initramfs over its size budget")

// Config is one build's inputs.
type Config struct {
	// ModuleRoot is the anvil Go module's directory (go tool u-root runs
	// there, with its pinned version).
	ModuleRoot string
	// KernelModules is the directory of uncompressed .ko files to ship
	// (hack/fetch-kernel.sh's cache: $ANVIL_CACHE/kernel/modules).
	KernelModules string
	// CABundle is the PEM bundle to ship (Debian's ca-certificates).
	CABundle string
	// Output is the compressed image's path.
	Output string
	// MaxBytes is the size budget of the compressed image.
	MaxBytes int64
	// Version is stamped into the agent (its -version and Register).
	Version string
	// Go is the go command (default "go").
	Go string
	// Log receives progress (default: discard).
	Log *slog.Logger
}

// Defaults returns the budget and the paths Makefile uses.
func Defaults() Config {
	return Config{
		ModuleRoot:    ".",
		KernelModules: "/var/cache/anvil/kernel/modules",
		CABundle:      "/etc/ssl/certs/ca-certificates.crt",
		Output:        "bin/anvil-initramfs.cpio.zst",
		MaxBytes:      12 << 20,
		Version:       "dev",
		Go:            "go",
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"module root", c.ModuleRoot}, {"kernel modules directory", c.KernelModules},
		{"CA bundle", c.CABundle}, {"output", c.Output}, {"go command", c.Go}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.name))
		}
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("size budget %d: want a positive number of bytes", c.MaxBytes))
	}
	if strings.ContainsAny(c.Version, " \t\n'\"") {
		errs = append(errs, fmt.Errorf("version %q: no spaces or quotes", c.Version))
	}
	return errors.Join(errs...)
}

// Result describes a built image.
type Result struct {
	Path string
	// Bytes is the compressed size, CPIOBytes the archive's.
	Bytes, CPIOBytes int64
	// SHA256 is the hex digest of the compressed image.
	SHA256 string
	// Modules are the shipped modules in load order.
	Modules []string
}

// OrderFileContents renders the order file for mods (already in load
// order): one file name a line, as bootenv.ParseOrder reads it.
func OrderFileContents(mods []modorder.Module) []byte {
	var b bytes.Buffer
	b.WriteString("# Load order of the modules in this directory (initramfs/modorder: by modinfo depends=).\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "%s.ko\n", m.Name)
	}
	return b.Bytes()
}

// urootArgs are the arguments of `go tool u-root` that write the archive
// to out, with the order file at orderPath.
func urootArgs(c Config, mods []modorder.Module, orderPath, grubDir, out string) []string {
	args := []string{
		"tool", "u-root",
		"-o", out,
		"-base=/dev/null",
		"-defaultsh=",
		"-skip-ldd",
		"-uinitcmd=anvil-agent --mode boot",
		// Stripped, trimmed and without build id, as u-root's default,
		// plus the version.
		"-go-extra-args=-ldflags=-s -w -buildid= -X " + AgentPackage + ".version=" + c.Version,
	}
	for _, m := range mods {
		args = append(args, "-files", m.Path+":"+ModulesDir+"/"+m.Name+".ko")
	}
	for _, f := range []string{bootloader.EFIFile, bootloader.BootFile, bootloader.CoreFile, bootloader.VersionFile} {
		args = append(args, "-files", filepath.Join(grubDir, f)+":"+strings.TrimPrefix(bootloader.Dir, "/")+"/"+f)
	}
	args = append(args,
		"-files", orderPath+":"+ModulesDir+"/"+OrderFile,
		"-files", c.CABundle+":"+CABundle,
		InitPackage, "./agent/cmd/anvil-agent",
	)
	return append(args, DebugCommands()...)
}

// Build builds the image described by c.
func Build(ctx context.Context, c Config) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(c.CABundle); err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	kmods, err := filepath.Abs(c.KernelModules)
	if err != nil {
		return nil, fmt.Errorf("kernel modules directory: %w", err)
	}
	found, err := modorder.ReadDir(kmods)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no kernel modules in %s (run hack/fetch-kernel.sh)", kmods)
	}
	mods, err := modorder.Order(found, nil)
	if err != nil {
		return nil, fmt.Errorf("order kernel modules in %s: %w", kmods, err)
	}
	tmp, err := os.MkdirTemp("", "anvil-initramfs-")
	if err != nil {
		return nil, fmt.Errorf("build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	orderPath := filepath.Join(tmp, OrderFile)
	if err := os.WriteFile(orderPath, OrderFileContents(mods), 0o644); err != nil {
		return nil, fmt.Errorf("write module order: %w", err)
	}
	grubDir := filepath.Join(tmp, "grub")
	if _, err := mkgrub.Build(ctx, grubDir); err != nil {
		return nil, err
	}
	cpioPath := filepath.Join(tmp, "initramfs.cpio")
	cmd := exec.CommandContext(ctx, c.Go, urootArgs(c, mods, orderPath, grubDir, cpioPath)...)
	cmd.Dir = c.ModuleRoot
	// The image is for the machine, whatever the build host is.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	log.Info("building the archive with u-root", "modules", len(mods))
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go tool u-root: %w\n%s", err, out.String())
	}
	res, err := compress(cpioPath, c.Output, c.MaxBytes)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		res.Modules = append(res.Modules, m.Name)
	}
	return res, nil
}

// compress writes the zstd-compressed cpio to a temporary file next to
// output, checks the budget and renames it into place.
func compress(cpioPath, output string, maxBytes int64) (*Result, error) {
	in, err := os.Open(cpioPath)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat archive: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(output), 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(output), ".initramfs-*")
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := compressTo(io.MultiWriter(tmp, h), in)
	if err != nil {
		return nil, fmt.Errorf("compress %s: %w", cpioPath, err)
	}
	res := &Result{Path: output, Bytes: n, CPIOBytes: fi.Size(), SHA256: hex.EncodeToString(h.Sum(nil))}
	if n > maxBytes {
		return res, fmt.Errorf("%s would be %d bytes (%.1f MiB; archive %.1f MiB), budget %d bytes (%.1f MiB): %w",
			output, n, float64(n)/(1<<20), float64(fi.Size())/(1<<20), maxBytes, float64(maxBytes)/(1<<20), ErrOverBudget)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("chmod output: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	if err := os.Rename(tmp.Name(), output); err != nil {
		return nil, fmt.Errorf("rename output into place: %w", err)
	}
	return res, nil
}

// compressTo zstd-compresses r into w and returns the compressed size. One
// encoder goroutine and a fixed level make the output a function of the
// input alone.
func compressTo(w io.Writer, r io.Reader) (int64, error) {
	cw := &countWriter{w: w}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(enc, r); err != nil {
		enc.Close()
		return 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
