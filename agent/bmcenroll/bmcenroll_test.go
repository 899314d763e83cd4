package bmcenroll

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
)

// The tests drive OpenIPMI's simulator over RMCP+ as its administrator:
// the same commands the agent sends through /dev/ipmi0 (the lab proves
// that path on QEMU's KCS interface).

// lanClient logs into a simulator over RMCP+ as user/pass.
func lanClient(t *testing.T, s *ipmisim.Sim, user, pass string) (*ipmi.Client, error) {
	t.Helper()
	c, err := ipmi.NewClient("127.0.0.1", s.Port, user, pass)
	if err != nil {
		return nil, err
	}
	c.WithInterface(ipmi.InterfaceLanplus).WithTimeout(2 * time.Second).WithRetry(0).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator).WithCipherSuiteID(types.CipherSuiteID3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, nil
}

func admin(t *testing.T, s *ipmisim.Sim) *ipmi.Client {
	t.Helper()
	c, err := lanClient(t, s, ipmisim.User, ipmisim.Password)
	if err != nil {
		t.Fatalf("log in as the simulator's administrator: %v", err)
	}
	return c
}

func TestDescribe(t *testing.T) {
	s := ipmisim.Start(t)
	d, err := Describe(context.Background(), admin(t, s))
	if err != nil {
		t.Fatal(err)
	}
	// ipmisim: LAN channel 1, the LAN it configures, mc_add's IDs.
	if d.GetChannel() != 1 || d.GetIp() != "127.0.0.1" || d.GetMac() != ipmisim.SimMAC || d.GetNetmask() != "255.0.0.0" ||
		d.GetGateway() != "127.0.0.254" || d.GetIpSource() != "static" || d.GetVlan() != 0 {
		t.Errorf("LAN: %v", d)
	}
	if d.GetManufacturerId() != 0x1291 || d.GetProductId() != 0xf02 || d.GetIpmiVersion() != "2.0" || d.GetFirmware() == "" {
		t.Errorf("device: %v", d)
	}
}

func TestEnrollCreatesThenRotates(t *testing.T) {
	s := ipmisim.Start(t)
	adm := admin(t, s)
	ctx := context.Background()
	pw1 := testPassword(t)
	id1, err := Enroll(ctx, adm, 1, pw1)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != firstSlot {
		t.Errorf("first enrollment took user %d, want the first free slot %d", id1, firstSlot)
	}
	if _, err := lanClient(t, s, User, pw1); err != nil {
		t.Fatalf("log in as the enrolled user: %v", err)
	}
	// A second enrollment (a reinstall) rotates the password in place.
	pw2 := testPassword(t)
	if pw2 == pw1 {
		t.Fatal("two passwords alike")
	}
	id2, err := Enroll(ctx, adm, 1, pw2)
	if err != nil {
		t.Fatal(err)
	}
	if id2 != id1 {
		t.Errorf("second enrollment took user %d, want user %d again", id2, id1)
	}
	if _, err := lanClient(t, s, User, pw1); err == nil {
		t.Error("the old password still logs in")
	}
	if _, err := lanClient(t, s, User, pw2); err != nil {
		t.Errorf("log in with the rotated password: %v", err)
	}
	// The vendor's administrator is untouched.
	if _, err := lanClient(t, s, ipmisim.User, ipmisim.Password); err != nil {
		t.Errorf("the administrator no longer logs in: %v", err)
	}
}

func TestEnrollNeverOverwritesAnotherUser(t *testing.T) {
	s := ipmisim.Start(t)
	adm := admin(t, s)
	ctx := context.Background()
	acc, err := adm.GetUserAccess(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint8(firstSlot); i <= acc.MaxUsersIDCount; i++ {
		if _, err := adm.SetUsername(ctx, i, fmt.Sprintf("ops%d", i)); err != nil {
			t.Fatalf("name user %d: %v", i, err)
		}
	}
	pw := testPassword(t)
	if _, err := Enroll(ctx, adm, 1, pw); !errors.Is(err, ErrNoFreeSlot) {
		t.Fatalf("full BMC: %v, want ErrNoFreeSlot", err)
	}
	for i := uint8(firstSlot); i <= acc.MaxUsersIDCount; i++ {
		n, err := adm.GetUsername(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimRight(n.Username, "\x00 "); got != fmt.Sprintf("ops%d", i) {
			t.Errorf("user %d is now %q", i, got)
		}
	}
}

func TestEnrollRefusesBadPasswords(t *testing.T) {
	for _, pw := range []string{"short", strings.Repeat("x", 21)} {
		if _, err := Enroll(context.Background(), nil, 1, pw); err == nil {
			t.Errorf("password of %d bytes accepted", len(pw))
		}
	}
}

func TestWaitDevice(t *testing.T) {
	dir := t.TempDir()
	dev, driver := dir+"/ipmi0", dir+"/ipmi_si"
	// No driver: no wait at all.
	start := time.Now()
	if err := waitDevice(context.Background(), dev, driver, time.Minute); !errors.Is(err, ErrNoDevice) || time.Since(start) > time.Second {
		t.Fatalf("no driver: %v after %v, want ErrNoDevice at once", err, time.Since(start))
	}
	if err := os.Mkdir(driver, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := waitDevice(context.Background(), dev, driver, 300*time.Millisecond); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("no device: %v, want ErrNoDevice", err)
	}
	// A device that appears while waiting is found.
	go func() {
		time.Sleep(150 * time.Millisecond)
		_ = os.WriteFile(dev, nil, 0o600)
	}()
	if err := waitDevice(context.Background(), dev, driver, 5*time.Second); err != nil {
		t.Fatalf("device appearing after 150ms: %v", err)
	}
}

// testPassword is a fresh password as the controller makes them.
func testPassword(t *testing.T) string {
	t.Helper()
	p, err := bmc.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
