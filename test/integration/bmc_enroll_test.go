package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// In-band BMC enrollment as the controller sees it: the boot script asks
// for it, Register stores what the agent enrolled (sealed, never shown),
// an operator's address wins, and the policy switch and a held session
// keep it out. (The lab proves the agent's side on QEMU's KCS interface.)

// enrollingMachine is a machine's inventory with an in-band BMC at ip.
func enrollingMachine(t *testing.T, i int, ip string) (uuid, mac string, inv *anvilv1.Inventory) {
	uuid = harness.UUID(t.Name(), i)
	inv = harness.Inventory(uuid, i)
	inv.Bmc = &anvilv1.BMC{Channel: 1, Ip: ip, Mac: "52:54:00:b0:00:01", IpSource: "static", Firmware: "9.08", IpmiVersion: "2.0"}
	return uuid, inv.GetNics()[0].GetMac(), inv
}

// noSecret fails when the machine as the API shows it, or any of its
// events, holds secret.
func (l *attackLab) noSecret(t *testing.T, id, secret string) {
	t.Helper()
	if txt := prototext.Format(l.machine(t, id)); strings.Contains(txt, secret) {
		t.Errorf("the machine shows the BMC password:\n%s", txt)
	}
	for _, e := range l.events(t, id) {
		if strings.Contains(e.GetMessage(), secret) {
			t.Errorf("event %q shows the BMC password", e.GetMessage())
		}
	}
}

// boot registers the machine as a fresh boot of its agent would: a script
// (and its boot token) from 127.0.0.1, then Register with it.
func (l *attackLab) boot(t *testing.T, uuid, mac string, inv *anvilv1.Inventory) *anvilv1.RegisterResponse {
	t.Helper()
	tok := l.script(t, "127.0.0.1", uuid, mac)
	resp, err := l.agentFrom(t, "127.0.0.1", tok).Register(context.Background(), &anvilv1.RegisterRequest{Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestInBandBMCEnrollment(t *testing.T) {
	l := startAttackLab(t, nil)
	ctx := context.Background()
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	resp := l.boot(t, uuid, mac, inv)
	e1 := resp.GetBmcEnrollment()
	if e1.GetUser() != "anvil" || len(e1.GetPassword()) != 16 {
		t.Fatalf("first boot: enrollment %v, want user anvil and a fresh password", e1)
	}
	m := l.machine(t, uuid)
	if m.GetBmcSource() != "in-band" || m.GetBmcAddress() != "ipmi://anvil:xxxxx@10.1.2.3" || m.GetInventory().GetBmc().GetIp() != "10.1.2.3" {
		t.Fatalf("after an in-band enrollment: BMC %q from %q, inventory %v", m.GetBmcAddress(), m.GetBmcSource(), m.GetInventory().GetBmc())
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "enrolled in-band by the agent") {
		t.Errorf("BMC event: %q", msg)
	}
	l.noSecret(t, uuid, e1.GetPassword())
	// The agent's outcome is a BMC event it reports.
	own := l.agentFrom(t, "127.0.0.1", resp.GetCredential())
	if _, err := own.Report(ctx, &anvilv1.ReportRequest{Type: anvilv1.EventType_EVENT_TYPE_BMC, Message: "BMC user anvil (ID 3) set in-band"}); err != nil {
		t.Fatalf("report the enrollment: %v", err)
	}

	// The same boot registering again (its own credential) is not asked
	// again.
	resp, err := own.Register(ctx, &anvilv1.RegisterRequest{Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBmcEnrollment() != nil {
		t.Error("a session continuing with its credential is asked to enroll again")
	}
	// The next boot rotates the password, the previous one kept as a
	// fallback.
	time.Sleep(liveWindow + 100*time.Millisecond)
	e2 := l.boot(t, uuid, mac, inv).GetBmcEnrollment()
	if e2 == nil || e2.GetPassword() == e1.GetPassword() {
		t.Fatalf("next boot: enrollment %v, want a new password", e2)
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "previous one stays as a fallback") {
		t.Errorf("rotation: %q", msg)
	}
	l.noSecret(t, uuid, e2.GetPassword())

	// An operator's address wins: no enrollment at the next boot, and the
	// address stays.
	if _, err := l.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: uuid, Address: "redfish://ops:opsecret@10.9.9.9"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(liveWindow + 100*time.Millisecond)
	if e := l.boot(t, uuid, mac, inv).GetBmcEnrollment(); e != nil {
		t.Errorf("a machine with the operator's BMC is asked to enroll: %v", e)
	}
	if m := l.machine(t, uuid); m.GetBmcSource() != "operator" || m.GetBmcAddress() != "redfish://ops:xxxxx@10.9.9.9" {
		t.Errorf("the operator's BMC was replaced: %q from %q", m.GetBmcAddress(), m.GetBmcSource())
	}
	// Cleared by the operator: the next boot enrolls again.
	if _, err := l.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(liveWindow + 100*time.Millisecond)
	if e := l.boot(t, uuid, mac, inv).GetBmcEnrollment(); e == nil {
		t.Error("a machine without a BMC is not asked to enroll")
	}
}

func TestBMCEnrollmentPolicyOff(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.BMCEnroll = trust.BMCOff })
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	if e := l.boot(t, uuid, mac, inv).GetBmcEnrollment(); e != nil {
		t.Fatalf("policy off, yet the agent is asked to enroll: %v", e)
	}
	if m := l.machine(t, uuid); m.GetBmcAddress() != "" {
		t.Errorf("policy off, yet the BMC %q was stored", m.GetBmcAddress())
	}
}

// A held session (enrollment policy approve) is not trusted with the
// machine's BMC: its agent is not asked to change the BMC's password, and
// the controller says why.
func TestHeldSessionIsNotAskedToEnroll(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.EnrollPolicy = trust.PolicyApprove })
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	if e := l.boot(t, uuid, mac, inv).GetBmcEnrollment(); e != nil {
		t.Fatalf("a held session is asked to enroll: %v", e)
	}
	m := l.machine(t, uuid)
	if m.GetState() != anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL || m.GetBmcAddress() != "" {
		t.Errorf("held machine: state %v, BMC %q", m.GetState(), m.GetBmcAddress())
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "awaits approval") {
		t.Errorf("BMC event: %q", msg)
	}
}

func lastOfType(evs []*anvilv1.Event, typ anvilv1.EventType) string {
	msg := ""
	for _, e := range evs {
		if e.GetType() == typ {
			msg = e.GetMessage()
		}
	}
	return msg
}
