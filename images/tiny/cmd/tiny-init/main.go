// Command tiny-init is the uinit of the anvil-tiny image (package
// tinyinit): it prepares the machine, finds the NoCloud seed, phones home,
// and then idles forever, since u-root's init exits, and the kernel
// panics, when its uinit exits.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/anvil-metal/anvil/images/tiny/tinyinit"
)

// version is set by the image build (-X). It has no initializer on
// purpose: u-root's busybox rewrite turns package-level initializers into
// code run at start, which would overwrite what the linker set.
var version string

func main() {
	log := slog.New(tinyinit.NewConsoleHandler(os.Stdout, slog.LevelInfo))
	c := tinyinit.Defaults()
	if version != "" {
		c.Version = version
	}
	out, err := tinyinit.Run(context.Background(), c, log)
	if err != nil {
		log.Error("boot failed", "err", err)
		out = "failed"
	}
	log.Info("idling", "outcome", string(out))
	tinyinit.Idle()
}
