package integration

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/boot"
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

func bmcCred(pw string) *anvilv1.BMCCredential {
	return &anvilv1.BMCCredential{User: "anvil", Password: pw, UserId: 3}
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

func TestInBandBMCEnrollment(t *testing.T) {
	l := startAttackLab(t, nil)
	ctx := context.Background()
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	body := l.scriptBody(t, "127.0.0.1", uuid, mac)
	if !strings.Contains(body, boot.EnrollBMCArg) {
		t.Fatalf("an unknown machine's agent is not asked to enroll its BMC:\n%s", body)
	}
	tok := bootTokenRE.FindStringSubmatch(body)[1]
	const pw1, pw2, pw3 = "FirstPw23456789a", "SecondPw3456789b", "ThirdPw23456789c"
	resp, err := l.agentFrom(t, "127.0.0.1", tok).Register(ctx, &anvilv1.RegisterRequest{Inventory: inv, BmcCredential: bmcCred(pw1)})
	if err != nil {
		t.Fatal(err)
	}
	m := l.machine(t, uuid)
	if m.GetBmcSource() != "in-band" || m.GetBmcAddress() != "ipmi://anvil:xxxxx@10.1.2.3" || m.GetInventory().GetBmc().GetIp() != "10.1.2.3" {
		t.Fatalf("after an in-band enrollment: BMC %q from %q, inventory %v", m.GetBmcAddress(), m.GetBmcSource(), m.GetInventory().GetBmc())
	}
	if n := countType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); n != 1 {
		t.Errorf("%d BMC events, want 1", n)
	}
	l.noSecret(t, uuid, pw1)

	// The next boot of the agent rotates the password: stored again.
	own := l.agentFrom(t, "127.0.0.1", resp.GetCredential())
	resp, err = own.Register(ctx, &anvilv1.RegisterRequest{Inventory: inv, BmcCredential: bmcCred(pw2)})
	if err != nil {
		t.Fatal(err)
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "enrolled in-band by the agent") {
		t.Errorf("rotation: %q", msg)
	}
	l.noSecret(t, uuid, pw2)

	// An operator's address wins: the boot no longer asks for enrollment,
	// and an enrollment that comes anyway is not stored.
	if _, err := l.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: uuid, Address: "redfish://ops:opsecret@10.9.9.9"}); err != nil {
		t.Fatal(err)
	}
	if body := l.scriptBody(t, "127.0.0.1", uuid, mac); strings.Contains(body, boot.EnrollBMCArg) {
		t.Errorf("a machine with the operator's BMC is asked to enroll:\n%s", body)
	}
	own = l.agentFrom(t, "127.0.0.1", resp.GetCredential())
	if _, err := own.Register(ctx, &anvilv1.RegisterRequest{Inventory: inv, BmcCredential: bmcCred(pw3)}); err != nil {
		t.Fatal(err)
	}
	m = l.machine(t, uuid)
	if m.GetBmcSource() != "operator" || m.GetBmcAddress() != "redfish://ops:xxxxx@10.9.9.9" {
		t.Errorf("the operator's BMC was replaced: %q from %q", m.GetBmcAddress(), m.GetBmcSource())
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "not stored: an operator set") {
		t.Errorf("enrollment over the operator's BMC: %q", msg)
	}
	l.noSecret(t, uuid, pw3)
	// Cleared by the operator: the boot asks again.
	if _, err := l.op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	if body := l.scriptBody(t, "127.0.0.1", uuid, mac); !strings.Contains(body, boot.EnrollBMCArg) {
		t.Errorf("a machine without a BMC is not asked to enroll:\n%s", body)
	}
}

func TestBMCEnrollmentPolicyOff(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.BMCEnroll = trust.BMCOff })
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	body := l.scriptBody(t, "127.0.0.1", uuid, mac)
	if strings.Contains(body, boot.EnrollBMCArg) {
		t.Fatalf("policy off, yet the agent is asked to enroll:\n%s", body)
	}
	// An agent that enrolls anyway (an old or foreign one) is not listened to.
	tok := bootTokenRE.FindStringSubmatch(body)[1]
	if _, err := l.agentFrom(t, "127.0.0.1", tok).Register(context.Background(), &anvilv1.RegisterRequest{Inventory: inv, BmcCredential: bmcCred("Unwanted23456789")}); err != nil {
		t.Fatal(err)
	}
	if m := l.machine(t, uuid); m.GetBmcAddress() != "" {
		t.Errorf("policy off, yet the BMC %q was stored", m.GetBmcAddress())
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "policy is off") {
		t.Errorf("BMC event: %q", msg)
	}
	l.noSecret(t, uuid, "Unwanted23456789")
}

// A held session (enrollment policy approve) is not trusted with the
// machine's power: its BMC credential is not stored.
func TestHeldSessionBMCNotStored(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.EnrollPolicy = trust.PolicyApprove })
	uuid, mac, inv := enrollingMachine(t, 0, "10.1.2.3")
	tok := l.script(t, "127.0.0.1", uuid, mac)
	if _, err := l.agentFrom(t, "127.0.0.1", tok).Register(context.Background(), &anvilv1.RegisterRequest{Inventory: inv, BmcCredential: bmcCred("HeldPw3456789abc")}); err != nil {
		t.Fatal(err)
	}
	m := l.machine(t, uuid)
	if m.GetState() != anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL || m.GetBmcAddress() != "" {
		t.Errorf("held machine: state %v, BMC %q", m.GetState(), m.GetBmcAddress())
	}
	if msg := lastOfType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_BMC); !strings.Contains(msg, "awaits approval") {
		t.Errorf("BMC event: %q", msg)
	}
	l.noSecret(t, uuid, "HeldPw3456789abc")
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
