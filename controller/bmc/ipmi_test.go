package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ipmiSim is OpenIPMI's BMC simulator (Debian package openipmi) on a
// loopback UDP port, with its chassis control handed to a script that keeps
// the power state and the boot device in files and logs every command.
type ipmiSim struct {
	dir  string
	port int
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startIPMISim(t *testing.T) *ipmiSim {
	t.Helper()
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		t.Fatalf("ipmi_sim not found (hack/install-deps.sh installs Debian's openipmi): %v", err)
	}
	s := &ipmiSim{dir: t.TempDir(), port: freeUDPPort(t)}
	script := filepath.Join(s.dir, "chassis.sh")
	// ipmi_sim's external chassis control: "get NAME..." prints NAME:value
	// lines, "set NAME value..." changes them.
	if err := os.WriteFile(script, []byte(`#!/bin/sh
d=`+s.dir+`
op=$1; shift
case $op in
get) for k in "$@"; do printf '%s:%s\n' "$k" "$(cat "$d/$k" 2>/dev/null || echo 0)"; done ;;
set) while [ $# -gt 1 ]; do echo "$2" > "$d/$1"; echo "$1=$2" >> "$d/log"; shift 2; done ;;
esac
`), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"power": "0", "boot": "none", "log": ""} {
		if err := os.WriteFile(filepath.Join(s.dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`name "anvilbmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 1 true  ""      "test"   user  10 none md2 md5 straight
  user 2 true  "admin" "secret" admin 10 none md2 md5 straight
`, s.port, script)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n"
	for f, v := range map[string]string{"lan.conf": conf, "bmc.emu": emu} {
		if err := os.WriteFile(filepath.Join(s.dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-c", filepath.Join(s.dir, "lan.conf"), "-f", filepath.Join(s.dir, "bmc.emu"), "-n", "-s", filepath.Join(s.dir, "state"))
	out, err := os.Create(filepath.Join(s.dir, "sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr, cmd.Stdin = out, out, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	// Ready when it answers a session (it binds its port at once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.driver(t, "admin", "secret").Status(context.Background())
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "sim.log"))
			t.Fatalf("ipmi_sim did not answer: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *ipmiSim) driver(t *testing.T, user, pass string) Driver {
	t.Helper()
	d, err := Open(fmt.Sprintf("ipmi://%s:%s@127.0.0.1:%d", user, pass, s.port), WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *ipmiSim) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func TestIPMIAgainstOpenIPMISimulator(t *testing.T) {
	s := startIPMISim(t)
	d := s.driver(t, "admin", "secret")
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
	if got, exp := s.log(t), "boot=pxe power=1 reset=1 boot=default power=0 power=1"; got != exp {
		t.Fatalf("chassis commands %q, want %q", got, exp)
	}
}

func TestIPMIWrongPasswordIsNotRetried(t *testing.T) {
	s := startIPMISim(t)
	start := time.Now()
	err := s.driver(t, "admin", "wrong").PowerOn(context.Background())
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
	if got := s.log(t); got != "" {
		t.Fatalf("commands ran with a wrong password: %q", got)
	}
}

func TestIPMIUnreachableIsBounded(t *testing.T) {
	port := freeUDPPort(t) // nothing listens
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
