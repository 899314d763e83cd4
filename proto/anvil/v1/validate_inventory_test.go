package anvilv1

import (
	"strings"
	"testing"
)

// What an agent (or anyone holding a boot token) sends about LLDP
// neighbours and the in-band BMC is bounded before it is stored.
func TestInventoryBounds(t *testing.T) {
	base := func() *Inventory {
		return &Inventory{Product: &Product{Uuid: "4c4c4544-0042-3510-8052-b4c04f4e3332"},
			Nics: []*NIC{{Name: "eth0", Mac: "52:54:00:00:00:01", LldpNeighbors: []*LLDPNeighbor{{ChassisId: "sw1", PortId: "p1", TtlSeconds: 120}}}},
			Bmc:  &BMC{Channel: 1, Ip: "10.0.0.5"}}
	}
	if err := base().ValidateAll(); err != nil {
		t.Fatalf("a plausible inventory: %v", err)
	}
	long := strings.Repeat("x", MaxInventoryString+1)
	for _, tc := range []struct {
		name string
		edit func(*Inventory)
		want string
	}{
		{"too many neighbours", func(i *Inventory) {
			for range MaxLLDPNeighbors {
				i.Nics[0].LldpNeighbors = append(i.Nics[0].LldpNeighbors, &LLDPNeighbor{ChassisId: "x"})
			}
		}, "LLDP neighbours"},
		{"a long system name", func(i *Inventory) { i.Nics[0].LldpNeighbors[0].SystemName = long }, "lldp_neighbors[0]"},
		{"too many management addresses", func(i *Inventory) {
			i.Nics[0].LldpNeighbors[0].ManagementAddresses = make([]string, MaxLLDPNeighbors+1)
		}, "management addresses"},
		{"a long BMC firmware", func(i *Inventory) { i.Bmc.Firmware = long }, "inventory.bmc"},
		{"a long enrollment error", func(i *Inventory) { i.Bmc.EnrollError = strings.Repeat("e", MaxMessageBytes+1) }, "enroll_error"},
	} {
		i := base()
		tc.edit(i)
		if err := i.ValidateAll(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}
