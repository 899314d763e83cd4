package inventory

import (
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestNetlinkLinkUp(t *testing.T) {
	tests := []struct {
		oper  netlink.LinkOperState
		flags uint32
		want  bool
	}{
		{netlink.OperUp, unix.IFF_UP | unix.IFF_LOWER_UP, true},
		{netlink.OperUp, unix.IFF_UP, true},
		{netlink.OperUnknown, unix.IFF_UP | unix.IFF_LOWER_UP, true}, // lo, tun
		{netlink.OperDown, unix.IFF_UP, false},
		{netlink.OperLowerLayerDown, unix.IFF_UP, false},
		{netlink.OperDormant, 0, false},
	}
	for _, tt := range tests {
		if got := netlinkLinkUp(tt.oper, tt.flags); got != tt.want {
			t.Errorf("netlinkLinkUp(%v, %#x) = %v, want %v", tt.oper, tt.flags, got, tt.want)
		}
	}
}

// TestNetlinkLinkStateLive asks the running kernel about lo, which every
// network namespace has, up.
func TestNetlinkLinkStateLive(t *testing.T) {
	st, err := netlinkLinkState("lo")
	if err != nil {
		t.Skipf("no rtnetlink here: %v", err)
	}
	if !st.up || st.mtu == 0 {
		t.Errorf("lo = %+v, want up with an MTU", st)
	}
	if _, err := netlinkLinkState("anvil-no-such-if"); err == nil {
		t.Error("unknown link: no error")
	}
}
