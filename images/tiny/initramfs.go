package tiny

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/anvil-metal/anvil/initramfs"
	"github.com/anvil-metal/anvil/initramfs/modorder"
)

// InitPackage is tiny-init's main package; its version variable is set
// through the linker.
const InitPackage = "github.com/anvil-metal/anvil/images/tiny/cmd/tiny-init"

type initrd struct {
	data      []byte
	cpioBytes int64
	modules   []string
}

// urootArgs are the arguments of `go tool u-root` that write the archive
// to out: u-root's init, tiny-init as its uinit, and the kernel modules
// with their order file where agent/bootenv looks for them.
func urootArgs(c Config, mods []modorder.Module, orderPath, out string) []string {
	args := []string{
		"tool", "u-root",
		"-o", out,
		"-base=/dev/null",
		"-defaultsh=",
		"-skip-ldd",
		"-uinitcmd=tiny-init",
		// gobusybox keeps the main package's import path for -X.
		"-go-extra-args=-ldflags=-s -w -buildid= -X " + InitPackage + ".version=" + c.Version,
		// gobusybox passes -a to go build, which recompiles the standard
		// library and every dependency on each build (~50 s on two
		// cores); the build cache is content-addressed and -trimpath
		// keeps paths out, so the cached objects give the same bytes
		// (~7 s warm).
		"-go-extra-args=-a=false",
	}
	for _, m := range mods {
		args = append(args, "-files", m.Path+":"+initramfs.ModulesDir+"/"+m.Name+".ko")
	}
	return append(args,
		"-files", orderPath+":"+initramfs.ModulesDir+"/"+initramfs.OrderFile,
		initramfs.InitPackage, "./images/tiny/cmd/tiny-init",
	)
}

// serverOnly names the modules of the agent's kernel cache the tiny image
// leaves out: it runs in QEMU VMs (virtio, NVMe), never on a server's NICs,
// SATA controller or BMC, and every module costs boot time under TCG.
func serverOnly(name string) bool {
	switch name {
	case "ipmi_msghandler", "ipmi_si", "ipmi_devintf",
		"igb", "ixgbe", "i40e", "bnxt_en", "tg3", "e1000e", "dca", "mdio", "mdio_devres", "libphy", "i2c_algo_bit", "xfrm_algo",
		"ahci", "libahci", "libata":
		return true
	}
	return false
}

// buildInitramfs builds the zstd-compressed initramfs in dir.
func buildInitramfs(ctx context.Context, c Config, dir string) (*initrd, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("initramfs build directory: %w", err)
	}
	kmods, err := filepath.Abs(filepath.Join(c.KernelDir, "modules"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules directory: %w", err)
	}
	all, err := modorder.ReadDir(kmods)
	if err != nil {
		return nil, err
	}
	var found []modorder.Module
	for _, m := range all {
		if !serverOnly(m.Name) {
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no kernel modules in %s (run hack/fetch-kernel.sh)", kmods)
	}
	mods, err := modorder.Order(found, nil)
	if err != nil {
		return nil, fmt.Errorf("order kernel modules in %s: %w", kmods, err)
	}
	orderPath, err := filepath.Abs(filepath.Join(dir, initramfs.OrderFile))
	if err != nil {
		return nil, fmt.Errorf("order file: %w", err)
	}
	if err := os.WriteFile(orderPath, initramfs.OrderFileContents(mods), 0o644); err != nil {
		return nil, fmt.Errorf("write module order: %w", err)
	}
	cpioPath, err := filepath.Abs(filepath.Join(dir, "initramfs.cpio"))
	if err != nil {
		return nil, fmt.Errorf("archive path: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.Go, urootArgs(c, mods, orderPath, cpioPath)...)
	cmd.Dir = c.ModuleRoot
	// The image is for the machine, whatever the build host is.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go tool u-root: %w\n%s", err, out.String())
	}
	cpio, err := os.ReadFile(cpioPath)
	if err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	var z bytes.Buffer
	enc, err := zstd.NewWriter(&z, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	if _, err := enc.Write(cpio); err != nil {
		enc.Close()
		return nil, fmt.Errorf("compress archive: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("compress archive: %w", err)
	}
	r := &initrd{data: z.Bytes(), cpioBytes: int64(len(cpio))}
	for _, m := range mods {
		r.modules = append(r.modules, m.Name)
	}
	return r, nil
}
