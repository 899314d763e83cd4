//go:build !linux

package lldp

import "context"

// Listen returns ErrUnsupported: AF_PACKET sockets are Linux's.
func (c *Collector) Listen(context.Context, ...string) error { return ErrUnsupported }
