package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"

	"github.com/anvil-metal/anvil/agent/image"
	"github.com/anvil-metal/anvil/agent/image/fetch"
	"github.com/anvil-metal/anvil/agent/image/format"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// runChild runs one anvil candidate in this (separate) process.
func runChild(mode string, args []string) error {
	ctx := context.Background()
	if p := os.Getenv("IMAGEWRITE_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	switch mode {
	case "write":
		if len(args) != 3 {
			return fmt.Errorf("write URL CHECKSUM DEVICE")
		}
		// As the agent runs it after an erase: the target reads as zeroes.
		res, err := image.Install(ctx, image.Request{
			URL: args[0], Checksum: args[1], Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
			Target: args[2], Zeroed: true,
		}, image.Options{Source: fetch.Source(fetch.Options{}), Decode: format.DecodeOptions{Threads: threads()}})
		if err != nil {
			return err
		}
		return printJSON(res)
	case "erase":
		if len(args) != 1 {
			return fmt.Errorf("erase DEVICE")
		}
		return eraseChild(ctx, args[0])
	}
	return fmt.Errorf("unknown child mode %q", mode)
}

// threads lets IMAGEWRITE_THREADS override the decoder's default
// concurrency (0: the default).
func threads() int {
	n, _ := strconv.Atoi(os.Getenv("IMAGEWRITE_THREADS"))
	return n
}
