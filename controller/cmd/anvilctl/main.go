// Command anvilctl is the operator's command line for the anvil controller:
// machines, images and sizes over the gRPC operator API. The commands live
// in package controller/cli; this file only connects them to the process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/anvil-metal/anvil/controller/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
