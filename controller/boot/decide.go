package boot

import (
	"fmt"
	"strings"

	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Decision is what a network-booting machine is told to boot.
type Decision struct {
	// Local sends the machine to its installed disk; otherwise it boots
	// the agent.
	Local  bool
	Reason string
}

// Decide is the loop guard: a machine whose allocation's image was
// installed and booted goes to its disk, whatever made it boot from the
// network again (a BIOS boot order with the NIC first, a firmware reboot
// after a failed kexec, an operator's reset). Freeing it (reclaim) or
// asking for a reinstall clears that, and the next network boot runs the
// agent. Unknown machines and every other state boot the agent.
func Decide(m *store.Machine) Decision {
	if m == nil {
		return Decision{Reason: "unknown machine: boot the agent to register it"}
	}
	st := m.Status
	switch {
	case st.Reclaiming:
		return Decision{Reason: fmt.Sprintf("machine %s is being reclaimed: boot the agent to erase it", m.ID)}
	case st.Allocated && st.Installed:
		img := m.Allocation.GetImageId()
		return Decision{Local: true, Reason: fmt.Sprintf("machine %s is installed with image %s (%s): boot from disk", m.ID, img, stateName(st.State))}
	case st.Allocated:
		return Decision{Reason: fmt.Sprintf("machine %s is allocated, its image is not installed yet (%s): boot the agent", m.ID, stateName(st.State))}
	}
	return Decision{Reason: fmt.Sprintf("machine %s is %s: boot the agent", m.ID, stateName(st.State))}
}

func stateName(s anvilv1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}
