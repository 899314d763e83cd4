package boot

import (
	"strings"
	"testing"

	"github.com/anvil-metal/anvil/controller/lifecycle"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestRenderScripts(t *testing.T) {
	chain, err := RenderChain("http://10.0.2.2:8080/")
	if err != nil {
		t.Fatal(err)
	}
	if want := `#!ipxe
# anvil: ask for this machine's script
chain --autofree http://10.0.2.2:8080/ipxe/script?uuid=${uuid}&mac=${netX/mac}&platform=${platform} || goto failed
# The machine's script returned: it is to boot from its disk. A UEFI
# firmware goes on with its next boot option only after a failure status.
iseq ${anvil-next} disk && exit 1 ||
exit
:failed
echo anvil: could not fetch the boot script from http://10.0.2.2:8080; retrying in 10 s
sleep 10
chain --autofree http://10.0.2.2:8080/ipxe/boot.ipxe
`; chain != want {
		t.Errorf("chain script:\n%s\nwant:\n%s", chain, want)
	}

	cmd, err := Cmdline("10.0.2.2:7443", "sha256:ab12", "anvb_tok.sig", " console=ttyS0 ")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := RenderNetboot(Netboot{
		Reason:    "machine m1 is ready\nsecond line",
		KernelURL: "http://10.0.2.2:8080/files/agent-kernel", InitrdURL: "http://10.0.2.2:8080/files/agent-initramfs",
		ScriptURL: "http://10.0.2.2:8080/ipxe/script?mac=52%3A54%3A00%3A00%3A00%3A01", Cmdline: cmd,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := `#!ipxe
# anvil: machine m1 is ready second line
imgfree
kernel http://10.0.2.2:8080/files/agent-kernel initrd=initramfs anvil.controller=10.0.2.2:7443 anvil.ca_fp=sha256:ab12 anvil.token=anvb_tok.sig console=ttyS0 || goto failed
initrd --name initramfs http://10.0.2.2:8080/files/agent-initramfs || goto failed
boot || goto failed
:failed
echo anvil: booting the agent failed; retrying in 10 s
sleep 10
chain --autofree http://10.0.2.2:8080/ipxe/script?mac=52%3A54%3A00%3A00%3A00%3A01
`; nb != want {
		t.Errorf("netboot script:\n%s\nwant:\n%s", nb, want)
	}

	failed := "http://10.0.2.2:8080/ipxe/script?failed=sanboot&platform=pcbios&uuid=u1"
	for _, c := range []struct{ platform, want string }{
		{PlatformEFI, `#!ipxe
# anvil: machine m1 is installed
echo anvil: booting from disk: back to the firmware's next boot option
set anvil-next disk
exit
`},
		{PlatformBIOS, `#!ipxe
# anvil: machine m1 is installed
sanboot --no-describe --drive 0x80 || goto failed
:failed
chain --autofree http://10.0.2.2:8080/ipxe/script?failed=sanboot&platform=pcbios&uuid=u1&error=${errno} || exit
`},
	} {
		local, err := RenderLocal(LocalBoot{Reason: "machine m1 is installed", Platform: c.platform, FailedURL: failed})
		if err != nil {
			t.Fatal(err)
		}
		if local != c.want {
			t.Errorf("local script for %s:\n%s\nwant:\n%s", c.platform, local, c.want)
		}
	}
	// An unknown platform (a chain script of an older controller) is
	// treated as BIOS: sanboot, and exit when it fails.
	if local, err := RenderLocal(LocalBoot{Reason: "r", FailedURL: failed}); err != nil || !strings.Contains(local, "sanboot --no-describe --drive 0x80 || goto failed") {
		t.Errorf("unknown platform: %v\n%s", err, local)
	}

	exit, err := RenderExit("next device")
	if err != nil || exit != "#!ipxe\n# anvil: next device\nexit\n" {
		t.Errorf("exit script %q %v", exit, err)
	}
}

// Several controller replicas go onto the command line as one
// comma-separated anvil.controller= (without the spaces a flag may hold);
// a list the agent would refuse is refused here, before a machine boots
// with it.
func TestCmdlineControllerList(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.2.2:7443,10.0.2.3:7443":                   "anvil.controller=10.0.2.2:7443,10.0.2.3:7443 ",
		" 10.0.2.2:7443, 10.0.2.3:7443 ,[fd00::4]:7443": "anvil.controller=10.0.2.2:7443,10.0.2.3:7443,[fd00::4]:7443 ",
		"anvil.example.net:7443":                        "anvil.controller=anvil.example.net:7443 ",
	} {
		got, err := Cmdline(in, "sha256:ab", "t", "")
		if err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("Cmdline(%q) = %q, %v; want it to start with %q", in, got, err, want)
		}
	}
	for _, in := range []string{"10.0.2.2:7443,10.0.2.2:7443", "10.0.2.2:7443,", "10.0.2.2", "10.0.2.2:7443;10.0.2.3:7443"} {
		if got, err := Cmdline(in, "sha256:ab", "t", ""); err == nil {
			t.Errorf("Cmdline(%q) = %q, want an error", in, got)
		}
		cfg := Config{BaseURL: "http://10.0.2.2:8080", AgentController: in, CAFingerprint: "sha256:ab"}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "agent controller address") {
			t.Errorf("a boot service with --agent-controller %q: %v", in, err)
		}
	}
}

func TestScriptsRefuseValuesThatBreakOut(t *testing.T) {
	for _, c := range []struct{ controller, fp, token, extra string }{
		{"10.0.2.2:7443 anvil.token=x", "sha256:ab", "t", ""},
		{"10.0.2.2:7443", "sha256:${evil}", "t", ""},
		{"10.0.2.2:7443", "sha256:ab", "t\nshell", ""},
		{"10.0.2.2:7443", "sha256:ab", "", ""},
		{"10.0.2.2:7443", "sha256:ab", "t", "console=ttyS0\nshell"},
	} {
		if got, err := Cmdline(c.controller, c.fp, c.token, c.extra); err == nil {
			t.Errorf("Cmdline(%q, %q, %q, %q) = %q, want an error", c.controller, c.fp, c.token, c.extra, got)
		}
	}
	for _, u := range []string{"ftp://x/", "http://", "http://x/a b", "http://x/#frag", "/relative"} {
		if _, err := RenderChain(u); err == nil {
			t.Errorf("RenderChain(%q) accepted", u)
		}
		if _, err := RenderNetboot(Netboot{KernelURL: u, InitrdURL: "http://x/i", ScriptURL: "http://x/s", Cmdline: "c"}); err == nil {
			t.Errorf("RenderNetboot with kernel %q accepted", u)
		}
	}
	if _, err := RenderNetboot(Netboot{KernelURL: "http://x/k", InitrdURL: "http://x/i", ScriptURL: "http://x/s", Cmdline: "a\nshell"}); err == nil {
		t.Error("a command line with a line break was rendered")
	}
}

func TestDecide(t *testing.T) {
	st := func(s anvilv1.MachineState, f func(*lifecycle.Status)) *store.Machine {
		m := &store.Machine{ID: "m1", Status: lifecycle.Status{State: s}, Allocation: &anvilv1.Allocation{ImageId: "debian-12"}}
		if f != nil {
			f(&m.Status)
		}
		return m
	}
	installed := func(s *lifecycle.Status) { s.Allocated, s.Installed = true, true }
	cases := []struct {
		name string
		m    *store.Machine
		want Action
	}{
		{"unknown", nil, Agent},
		{"ready", st(anvilv1.MachineState_MACHINE_STATE_READY, nil), Agent},
		{"allocated, not installed", st(anvilv1.MachineState_MACHINE_STATE_ALLOCATED, func(s *lifecycle.Status) { s.Allocated = true }), Agent},
		{"installing", st(anvilv1.MachineState_MACHINE_STATE_INSTALLING, func(s *lifecycle.Status) { s.Allocated = true }), Agent},
		{"booting after install", st(anvilv1.MachineState_MACHINE_STATE_BOOTING, installed), Local},
		{"provisioned", st(anvilv1.MachineState_MACHINE_STATE_PROVISIONED, installed), Local},
		{"provisioned machine rebooting", st(anvilv1.MachineState_MACHINE_STATE_PXE_BOOTING, installed), Local},
		// Unauthenticated boot requests can pile up boot cycles: a crash
		// loop decides nothing but the reason's words.
		{"installed disk does not boot", st(anvilv1.MachineState_MACHINE_STATE_PROVISIONED, func(s *lifecycle.Status) {
			installed(s)
			s.CrashLoop, s.IncompleteCycles = true, 3
		}), Local},
		{"crash loop of the agent, not installed", st(anvilv1.MachineState_MACHINE_STATE_REGISTERING, func(s *lifecycle.Status) { s.Allocated, s.CrashLoop = true, true }), Agent},
		{"reinstall asked", st(anvilv1.MachineState_MACHINE_STATE_ALLOCATED, func(s *lifecycle.Status) { s.Allocated = true }), Agent},
		{"freed", st(anvilv1.MachineState_MACHINE_STATE_RECLAIM, func(s *lifecycle.Status) { s.Reclaiming = true }), Agent},
		{"failed", st(anvilv1.MachineState_MACHINE_STATE_FAILED, func(s *lifecycle.Status) { s.Allocated = true }), Agent},
	}
	for _, c := range cases {
		d := Decide(c.m)
		if d.Action != c.want || d.Reason == "" {
			t.Errorf("%s: %+v, want %v", c.name, d, c.want)
		}
		if c.m != nil && c.m.Status.CrashLoop && c.m.Status.Installed && !strings.Contains(d.Reason, "crash loop") {
			t.Errorf("%s: the reason %q does not say the machine is in a crash loop", c.name, d.Reason)
		}
	}
}
