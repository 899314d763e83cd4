//go:build !linux

package inventory

import (
	"errors"
	"fmt"
)

// netlinkLinkState is only available on Linux.
func netlinkLinkState(name string) (linkState, error) {
	return linkState{}, fmt.Errorf("netlink: link %s: %w", name, errors.ErrUnsupported)
}
