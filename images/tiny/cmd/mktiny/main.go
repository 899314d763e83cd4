// Command mktiny builds the anvil-tiny CI image (package tiny):
//
//	go run ./images/tiny/cmd/mktiny -kernel-dir $ANVIL_CACHE/kernel -o images/out
//
// It prints the files, their sizes and digests, and the time each step
// took.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/images/tiny"
)

func main() {
	c := tiny.Defaults()
	epoch := c.Epoch.Unix()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mktiny: SOURCE_DATE_EPOCH %q: %v\n", s, err)
			os.Exit(2)
		}
		epoch = n
	}
	var maxMiB float64
	flag.StringVar(&c.ModuleRoot, "module-root", c.ModuleRoot, "the anvil module's directory")
	flag.StringVar(&c.KernelDir, "kernel-dir", c.KernelDir, "hack/fetch-kernel.sh's cache: vmlinuz, modules/, release")
	flag.StringVar(&c.OutDir, "o", c.OutDir, "output directory")
	flag.StringVar(&c.Version, "version", c.Version, "image version")
	flag.Int64Var(&epoch, "epoch", epoch, "time stamp of the image's files, seconds since 1970 (default: SOURCE_DATE_EPOCH, else 2025-01-01)")
	flag.Float64Var(&maxMiB, "max-initrd-mib", float64(c.MaxInitrdBytes)/(1<<20), "size budget of the compressed initramfs in MiB")
	flag.Parse()
	c.Epoch = time.Unix(epoch, 0).UTC()
	c.MaxInitrdBytes = int64(maxMiB * (1 << 20))
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	res, err := tiny.Build(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktiny:", err)
		os.Exit(1)
	}
	cat := res.Catalogue
	fmt.Printf("%s: %d bytes (%.0f MiB), %s\n", res.Raw, cat.RawSize, float64(cat.RawSize)/(1<<20), cat.RawChecksum)
	fmt.Printf("%s: %d bytes (%.2f MiB), %s, format %s\n", res.Zst, cat.Size, float64(cat.Size)/(1<<20), cat.Checksum, cat.Format)
	fmt.Printf("%s: anvil-tiny %s, kernel %s, initrd %.2f MiB (archive %.2f MiB), modules %v\n",
		res.CataloguePath, cat.Version, cat.Kernel, float64(res.InitrdBytes)/(1<<20), float64(res.InitrdCPIOBytes)/(1<<20), res.Modules)
	fmt.Printf("%s: %s, %d bytes (%.2f MiB), %s, format %s\n", res.TarCataloguePath, res.TarCatalogue.File, res.TarCatalogue.Size,
		float64(res.TarCatalogue.Size)/(1<<20), res.TarCatalogue.Checksum, res.TarCatalogue.Format)
	fmt.Printf("built in %.1f s (initramfs %.1f s, assemble %.2f s, compress %.2f s)\n",
		time.Since(t0).Seconds(), res.Initramfs.Seconds(), res.Assemble.Seconds(), res.Compress.Seconds())
}
