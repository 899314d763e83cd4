package boot

import (
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
chain --autofree http://10.0.2.2:8080/ipxe/script?uuid=${uuid}&mac=${netX/mac} || goto failed
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

	local, err := RenderLocal("machine m1 is installed")
	if err != nil {
		t.Fatal(err)
	}
	if want := "#!ipxe\n# anvil: machine m1 is installed\nsanboot --no-describe --drive 0x80 || exit\n"; local != want {
		t.Errorf("local script:\n%s\nwant:\n%s", local, want)
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
	cases := []struct {
		name  string
		m     *store.Machine
		local bool
	}{
		{"unknown", nil, false},
		{"ready", st(anvilv1.MachineState_MACHINE_STATE_READY, nil), false},
		{"allocated, not installed", st(anvilv1.MachineState_MACHINE_STATE_ALLOCATED, func(s *lifecycle.Status) { s.Allocated = true }), false},
		{"installing", st(anvilv1.MachineState_MACHINE_STATE_INSTALLING, func(s *lifecycle.Status) { s.Allocated = true }), false},
		{"booting after install", st(anvilv1.MachineState_MACHINE_STATE_BOOTING, func(s *lifecycle.Status) { s.Allocated, s.Installed = true, true }), true},
		{"provisioned", st(anvilv1.MachineState_MACHINE_STATE_PROVISIONED, func(s *lifecycle.Status) { s.Allocated, s.Installed = true, true }), true},
		{"provisioned machine rebooting", st(anvilv1.MachineState_MACHINE_STATE_PXE_BOOTING, func(s *lifecycle.Status) { s.Allocated, s.Installed = true, true }), true},
		{"reinstall asked", st(anvilv1.MachineState_MACHINE_STATE_ALLOCATED, func(s *lifecycle.Status) { s.Allocated = true }), false},
		{"freed", st(anvilv1.MachineState_MACHINE_STATE_RECLAIM, func(s *lifecycle.Status) { s.Reclaiming = true }), false},
		{"failed", st(anvilv1.MachineState_MACHINE_STATE_FAILED, func(s *lifecycle.Status) { s.Allocated = true }), false},
	}
	for _, c := range cases {
		d := Decide(c.m)
		if d.Local != c.local || d.Reason == "" {
			t.Errorf("%s: %+v, want local=%v", c.name, d, c.local)
		}
	}
}
