package boot

import (
	"fmt"
	"strings"

	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Action is what a network-booting machine is told to do.
type Action int

const (
	// Agent boots the agent from the network.
	Agent Action = iota
	// Local sends the machine to its installed disk, in the way its
	// firmware allows (RenderLocal).
	Local
)

func (a Action) String() string {
	if a == Local {
		return "local"
	}
	return "agent"
}

// Decision is what a network-booting machine is told, and why.
type Decision struct {
	Action Action
	Reason string
}

// Decide is the loop guard: a machine whose allocation's image was
// installed and booted goes to its disk, whatever made it boot from the
// network again (a boot order with the network first, a firmware reboot
// after a failed kexec, an operator's reset, a power cut). Freeing it
// (reclaim) or asking for a reinstall clears that, and the next network
// boot runs the agent. An installed machine in a crash loop — it came
// back to the network several times without its installed system phoning
// home — is held in iPXE instead of being sent to a disk that does not
// boot, until an operator power-cycles it (which retries the disk), frees
// or reinstalls it. Unknown machines and every other state boot the agent.
func Decide(m *store.Machine) Decision {
	if m == nil {
		return Decision{Reason: "unknown machine: boot the agent to register it"}
	}
	st := m.Status
	switch {
	case st.Reclaiming:
		return Decision{Reason: fmt.Sprintf("machine %s is being reclaimed: boot the agent to erase it", m.ID)}
	case st.Allocated && st.Installed && st.CrashLoop:
		return Decision{Action: Local, Reason: fmt.Sprintf("machine %s is installed with image %s (%s): boot from disk; its installed system has not phoned home after the last %d network boots (crash loop): see its console, free or reinstall it",
			m.ID, m.Allocation.GetImageId(), stateName(st.State), st.IncompleteCycles)}
	case st.Allocated && st.Installed:
		img := m.Allocation.GetImageId()
		return Decision{Action: Local, Reason: fmt.Sprintf("machine %s is installed with image %s (%s): boot from disk", m.ID, img, stateName(st.State))}
	case st.Allocated:
		return Decision{Reason: fmt.Sprintf("machine %s is allocated, its image is not installed yet (%s): boot the agent", m.ID, stateName(st.State))}
	}
	return Decision{Reason: fmt.Sprintf("machine %s is %s: boot the agent", m.ID, stateName(st.State))}
}

func stateName(s anvilv1.MachineState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MACHINE_STATE_"))
}
