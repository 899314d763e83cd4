//go:build !linux

// Command fwconn measures the new-connection rate through anvil-firewall
// in network namespaces; it needs Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "fwconn: needs Linux (network namespaces, nftables)")
	os.Exit(1)
}
