package server

import (
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
	"github.com/anvil-metal/anvil/controller/store"
)

// An in-band enrollment changes the stored password before the agent sets
// it on the BMC. Until one of them answers the previous address is kept:
// if the agent never set the new password (it died, the BMC refused), the
// BMC refuses the new one, the previous one answers and becomes the only
// one, with an event; if the new one answers, the previous one is dropped.
// Both against a real ipmi_sim.
func TestInBandFallbackToThePreviousPassword(t *testing.T) {
	sim := ipmisim.Start(t)
	right, wrong := sim.Address(ipmisim.User, ipmisim.Password), sim.Address(ipmisim.User, "NeverSet1234abcd")
	for _, tc := range []struct {
		name            string
		current, before string
		want            string
		event           bool
	}{
		{"the agent never set the new password", wrong, right, right, true},
		{"the agent set it", right, wrong, right, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPowerEnv(t, func(c *Config) { c.BootDeadline = 0 })
			const id = "00000000-0000-4000-8000-0000000000e1"
			e.register(t, id)
			seal := func(a string) string {
				s, err := e.s.bmcSeal.Seal(a)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			if err := e.s.commit(t.Context(), func(tx store.Tx, _ *effects) error {
				m, err := tx.GetMachine(t.Context(), id)
				if err != nil {
					return err
				}
				m.BMC, m.Trust.BMCInBand, m.Trust.BMCPrevious = seal(tc.current), true, seal(tc.before)
				return tx.UpdateMachine(t.Context(), m)
			}); err != nil {
				t.Fatal(err)
			}
			m, err := e.s.getMachine(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			_, st, err := e.s.bmcStatus(t.Context(), m)
			if err != nil || st.Power == bmc.PowerUnknown {
				t.Fatalf("status: %v %v, want an answer through the password that works", st, err)
			}
			m, err = e.s.getMachine(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := e.s.bmcSeal.Open(m.BMC)
			if err != nil {
				t.Fatal(err)
			}
			if stored != tc.want || m.Trust.BMCPrevious != "" || !m.Trust.BMCInBand {
				t.Errorf("after the answer: BMC %s, previous %q, in-band %v; want %s alone", bmc.Redact(stored), m.Trust.BMCPrevious, m.Trust.BMCInBand, bmc.Redact(tc.want))
			}
			evs := e.bmcEvents(t, id)
			if got := len(evs) > 0 && strings.Contains(evs[len(evs)-1].GetMessage(), "took the previous one"); got != tc.event {
				t.Errorf("fallback event %v, want %v (%v)", got, tc.event, evs)
			}
			for _, ev := range evs {
				if strings.Contains(ev.GetMessage(), ipmisim.Password) || strings.Contains(ev.GetMessage(), "NeverSet") {
					t.Errorf("event shows a password: %q", ev.GetMessage())
				}
			}
		})
	}
}
