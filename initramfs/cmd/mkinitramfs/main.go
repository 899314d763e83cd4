// Command mkinitramfs builds the agent initramfs (package initramfs):
//
//	go run ./initramfs/cmd/mkinitramfs -modules $ANVIL_CACHE/kernel/modules -o bin/anvil-initramfs.cpio.zst
//
// It prints the image's size and sha256 and fails when the image is over
// the size budget.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/anvil-metal/anvil/initramfs"
)

func main() {
	c := initramfs.Defaults()
	var maxMiB float64
	flag.StringVar(&c.ModuleRoot, "module-root", c.ModuleRoot, "the anvil module's directory")
	flag.StringVar(&c.KernelModules, "modules", c.KernelModules, "directory of uncompressed kernel modules (hack/fetch-kernel.sh)")
	flag.StringVar(&c.CABundle, "ca-bundle", c.CABundle, "CA bundle to ship (PEM)")
	flag.StringVar(&c.Output, "o", c.Output, "output file")
	flag.Float64Var(&maxMiB, "max-mib", float64(c.MaxBytes)/(1<<20), "size budget of the compressed image in MiB")
	flag.StringVar(&c.Version, "version", c.Version, "agent version to stamp")
	flag.Parse()
	c.MaxBytes = int64(maxMiB * (1 << 20))
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := initramfs.Build(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %d bytes (%.2f MiB, budget %.0f MiB; archive %.2f MiB), sha256 %s, modules %v\n",
		res.Path, res.Bytes, float64(res.Bytes)/(1<<20), maxMiB, float64(res.CPIOBytes)/(1<<20), res.SHA256, res.Modules)
}
