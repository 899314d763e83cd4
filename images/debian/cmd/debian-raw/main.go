// Command debian-raw turns the Debian image's root filesystem archive into
// a raw disk image with anvil's own installer (agent/image/rootfs: GPT,
// FAT32 ESP, ext4 root, fstab and kexec manifest by PARTUUID), on a sparse
// file, exactly as anvil-agent installs a tar image onto a disk; then it
// looks the boot configuration up as the agent does before its kexec
// (agent/bootconfig) and fails unless it names a kernel, an initrd and
// root=PARTUUID= of the root partition.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/anvil-metal/anvil/images/debian"
)

func main() {
	tarPath := flag.String("tar", "", "root filesystem archive (POSIX tar)")
	out := flag.String("o", "", "raw image to write (must not exist)")
	mib := flag.Int64("mib", 2048, "image size in MiB (the agent grows the root partition to the disk)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *tarPath == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: debian-raw -tar ROOTFS.tar -o IMAGE.raw [-mib N]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, boot, err := debian.MakeRaw(ctx, *tarPath, *out, *mib<<20)
	if err != nil {
		log.Error("raw image", "err", err)
		os.Exit(1)
	}
	log.Info("installed", "image", *out, "result", res.String(), "took", res.Duration.Round(1e6))
	log.Info("boot configuration", "boot", boot.Describe())
}
