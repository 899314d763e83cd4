package bmc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc/ipmisim"
)

func open(t *testing.T, addr string) Driver {
	t.Helper()
	d, err := Open(addr, WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestIPMIAgainstOpenIPMISimulator(t *testing.T) {
	s := ipmisim.Start(t)
	d := open(t, s.Address(ipmisim.User, ipmisim.Password))
	ctx := context.Background()
	want := func(power PowerState, boot BootDevice) {
		t.Helper()
		st, err := d.Status(ctx)
		if err != nil || st.Power != power || st.NextBoot != boot {
			t.Fatalf("status %+v, %v; want power %v, next boot %v", st, err, power, boot)
		}
	}
	want(PowerOff, BootUnspecified)
	if err := d.SetNextBoot(ctx, BootPXE); err != nil {
		t.Fatal(err)
	}
	want(PowerOff, BootPXE)
	// Reset of a machine that is off powers it on.
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	want(PowerOn, BootPXE)
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.SetNextBoot(ctx, BootDisk); err != nil {
		t.Fatal(err)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	want(PowerOff, BootDisk)
	if err := d.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	want(PowerOn, BootDisk)
	// The commands the BMC carried out, in order.
	if got, exp := s.Log(t), "boot=pxe power=1 reset=1 boot=default power=0 power=1"; got != exp {
		t.Fatalf("chassis commands %q, want %q", got, exp)
	}
}

func TestIPMIWrongPasswordIsNotRetried(t *testing.T) {
	s := ipmisim.Start(t)
	start := time.Now()
	err := open(t, s.Address(ipmisim.User, "wrong")).PowerOn(context.Background())
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("power on with a wrong password: %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("the error shows the password: %v", err)
	}
	// One attempt: a refused password is never retried (BMCs lock accounts).
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a refused password took %v: retried?", took)
	}
	if got := s.Log(t); got != "" {
		t.Fatalf("commands ran with a wrong password: %q", got)
	}
}

func TestIPMIUnreachableIsBounded(t *testing.T) {
	port := ipmisim.FreeUDPPort(t) // nothing listens
	d, err := Open(fmt.Sprintf("ipmi://admin:secret@127.0.0.1:%d", port), WithTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Status(context.Background())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("status of a BMC that does not answer: %v, want ErrUnreachable", err)
	}
	// Three attempts of 0.5 s with 0.2 and 0.4 s between them.
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("gave up after %v: the retries are not bounded", took)
	}
}

func TestParseIPMIAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		err  string
	}{
		{in: "ipmi://admin:secret@10.0.0.5", want: Address{Scheme: "ipmi", Host: "10.0.0.5", Port: 623, User: "admin", Password: "secret"}},
		{in: "IPMI://root:pw@[fd00::5]:6230?boot=legacy", want: Address{Scheme: "ipmi", Host: "fd00::5", Port: 6230, User: "root", Password: "pw", LegacyBoot: true}},
		{in: "ipmi://root@bmc.example", want: Address{Scheme: "ipmi", Host: "bmc.example", Port: 623, User: "root"}},
		{in: "ipmi://10.0.0.5", err: "needs a user"},
		{in: "ipmi://admin:secret@10.0.0.5:0", err: "port"},
		{in: "ipmi://admin:secret@10.0.0.5:99999", err: "port"},
		{in: "ipmi://admin:secret@10.0.0.5/path", err: "want ipmi://"},
		{in: "ipmi://admin:secret@10.0.0.5?boot=uefi", err: "boot="},
		{in: "ipmi://admin:secret@10.0.0.5?x=1", err: "unknown parameter"},
		{in: "ipmi://admin:" + strings.Repeat("s", 21) + "@10.0.0.5", err: "20 bytes"},
	} {
		a, err := ParseAddress(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalidAddress) || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "secret") {
				t.Errorf("%q: %v, want an invalid-address error about %q without the password", tc.in, err, tc.err)
			}
			continue
		}
		a.raw = nil
		if err != nil || a != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, a, err, tc.want)
		}
	}
}
