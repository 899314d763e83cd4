package boot_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/boot"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// bootLab is a controller with its boot service on loopback.
type bootLab struct {
	h    *harness.Controller
	base string
	op   harness.Operator
}

func startBootLab(t *testing.T) *bootLab {
	t.Helper()
	dir := t.TempDir()
	files := filepath.Join(t.TempDir(), "files")
	images := filepath.Join(files, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"vmlinuz": "KERNEL-0123456789", "initramfs": "INITRAMFS", "images/tiny.raw": "IMAGE-BYTES", "secret": "do not serve",
	} {
		if err := os.WriteFile(filepath.Join(files, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := harness.FreePort(t)
	bc := boot.Defaults()
	bc.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	bc.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	bc.Kernel, bc.Initramfs, bc.ImageDir = filepath.Join(files, "vmlinuz"), filepath.Join(files, "initramfs"), images
	h := harness.StartController(t, dir, func(c *app.Config) { c.Boot = &bc })
	return &bootLab{h: h, base: bc.BaseURL, op: h.Operator()}
}

func (l *bootLab) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, l.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func (l *bootLab) phoneHome(t *testing.T, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, l.base+"/phone-home", strings.NewReader("tiny image up"))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (l *bootLab) state(t *testing.T, id string) *anvilv1.Machine {
	t.Helper()
	m, err := l.op.Machines.GetMachine(context.Background(), &anvilv1.GetMachineRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (l *bootLab) events(t *testing.T, id string, typ anvilv1.EventType) []*anvilv1.Event {
	t.Helper()
	r, err := l.op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []*anvilv1.Event
	for _, e := range r.GetEvents() {
		if e.GetType() == typ {
			out = append(out, e)
		}
	}
	return out
}

var tokenRE = regexp.MustCompile(`anvil\.token=(\S+)`)

func TestBootLoopOverHTTP(t *testing.T) {
	l := startBootLab(t)
	ctx := context.Background()
	uuid := harness.UUID("boot", 1)
	mac := "52:54:00:00:00:01"

	// The DHCP bootfile: a chain script coming back with iPXE's identity.
	resp, chain := l.get(t, "/ipxe/boot.ipxe")
	if resp.StatusCode != 200 || !strings.Contains(chain, l.base+"/ipxe/script?uuid=${uuid}&mac=${netX/mac}&platform=${platform}") {
		t.Fatalf("chain script %d:\n%s", resp.StatusCode, chain)
	}

	// An unknown machine boots the agent, with a boot token for its UUID.
	resp, script := l.get(t, "/ipxe/script?uuid="+strings.ToUpper(uuid)+"&mac="+mac)
	if resp.StatusCode != 200 || !strings.Contains(script, "kernel "+l.base+"/files/agent-kernel initrd=initramfs anvil.controller="+l.h.Addr()+" anvil.ca_fp="+l.h.Running().CAFingerprint) {
		t.Fatalf("netboot script %d:\n%s", resp.StatusCode, script)
	}
	m := tokenRE.FindStringSubmatch(script)
	if m == nil || !strings.HasPrefix(m[1], "anvb_") {
		t.Fatalf("no per-boot token in:\n%s", script)
	}
	bootTok := m[1]

	// The per-boot token registers that machine only, from the client it
	// was served to, with the NIC it was minted for.
	agentAPI := anvilv1.NewAgentServiceClient(l.h.Dial(bootTok))
	other := harness.UUID("boot", 2)
	if _, err := agentAPI.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(other, 2)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("register of another machine with the boot token: %v, want PermissionDenied", err)
	}
	if _, err := agentAPI.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 7)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("register with the boot token and an inventory without its NIC: %v, want PermissionDenied", err)
	}

	// The real agent runner registers with it and waits.
	a := l.h.StartAgentWithToken(t, uuid, 1, bootTok)
	harness.Eventually(t, 10*time.Second, func() error {
		m, err := l.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: uuid})
		if err != nil {
			return err
		}
		if s := m.GetState(); s != anvilv1.MachineState_MACHINE_STATE_READY {
			return fmt.Errorf("state %v", s)
		}
		return nil
	})
	// The token is spent.
	if _, err := agentAPI.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 1)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the boot token used a second time: %v, want PermissionDenied", err)
	}

	// A known machine's boot requests are observed, never recorded: the
	// machine stays Ready, and the observations are bounded.
	for range 3 {
		l.get(t, "/ipxe/script?uuid="+uuid+"&mac="+mac)
	}
	if evs := l.events(t, uuid, anvilv1.EventType_EVENT_TYPE_PXE_BOOTING); len(evs) != 0 {
		t.Errorf("PXE_BOOTING events %v from unauthenticated requests", evs)
	}
	if st := l.state(t, uuid); st.GetState() != anvilv1.MachineState_MACHINE_STATE_READY || len(st.GetBootObservations()) == 0 ||
		st.GetBootObservations()[0].GetMac() != mac || st.GetBootObservations()[0].GetClientAddress() != "127.0.0.1" {
		t.Errorf("after boot requests: state %v, observations %v", st.GetState(), st.GetBootObservations())
	}
	// By MAC alone too.
	if _, s := l.get(t, "/ipxe/script?mac="+strings.ToUpper(mac)); !strings.Contains(s, "machine "+uuid+" is") {
		t.Errorf("lookup by MAC:\n%s", s)
	}

	// Allocated, not installed yet: still the agent.
	if _, err := l.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: "tiny", Url: l.base + "/images/tiny.raw", Checksum: "sha256:" + strings.Repeat("0", 64),
		Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Os: "tiny", Version: "1", Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "tiny"}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if a.Install.Last() == nil {
			return fmt.Errorf("no install executed")
		}
		return nil
	})
	inst := a.Install.Last().GetInstall()
	if inst.GetPhoneHomeUrl() != l.base+"/phone-home" || !strings.HasPrefix(inst.GetPhoneHomeToken(), "anvp_") {
		t.Fatalf("install without phone home: %v", inst)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if s := l.state(t, uuid).GetState(); s != anvilv1.MachineState_MACHINE_STATE_BOOTING {
			return fmt.Errorf("state %v", s)
		}
		return nil
	})

	// Installed: the loop guard sends it to its disk, the way its
	// firmware boots one.
	if _, s := l.get(t, "/ipxe/script?uuid="+uuid+"&mac="+mac+"&platform=efi"); !strings.Contains(s, "\nset anvil-next disk\nexit\n") || strings.Contains(s, "sanboot") {
		t.Errorf("installed UEFI machine not sent back to the firmware:\n%s", s)
	}
	_, bios := l.get(t, "/ipxe/script?uuid="+uuid+"&mac="+mac+"&platform=pcbios")
	m = regexp.MustCompile(`chain --autofree (\S+)&error=\$\{errno\}`).FindStringSubmatch(bios)
	if !strings.Contains(bios, "sanboot --no-describe --drive 0x80 || goto failed") || m == nil {
		t.Fatalf("installed BIOS machine not sent to sanboot:\n%s", bios)
	}
	// A sanboot that failed comes back with iPXE's error, and the BIOS
	// goes on with its next device (TestFailedSanbootIsObserved follows
	// the report).
	failedURL, err := url.Parse(m[1] + "&error=0x3d126083")
	if err != nil {
		t.Fatal(err)
	}
	if _, s := l.get(t, failedURL.RequestURI()); !strings.Contains(s, "\nexit\n") {
		t.Errorf("after a failed sanboot:\n%s", s)
	}

	// Phone home: bad tokens are refused, the right one provisions.
	if code, body := l.phoneHome(t, ""); code != http.StatusUnauthorized {
		t.Errorf("phone home without a token: %d %s", code, body)
	}
	if code, body := l.phoneHome(t, inst.GetPhoneHomeToken()+"x"); code != http.StatusUnauthorized {
		t.Errorf("phone home with a forged token: %d %s", code, body)
	}
	if code, body := l.phoneHome(t, bootTok); code != http.StatusUnauthorized {
		t.Errorf("phone home with a boot token: %d %s", code, body)
	}
	if code, body := l.phoneHome(t, inst.GetPhoneHomeToken()); code != http.StatusOK {
		t.Fatalf("phone home: %d %s", code, body)
	}
	if s := l.state(t, uuid).GetState(); s != anvilv1.MachineState_MACHINE_STATE_PROVISIONED {
		t.Errorf("after phone home: %v", s)
	}
	if evs := l.events(t, uuid, anvilv1.EventType_EVENT_TYPE_PHONED_HOME); len(evs) != 1 || !strings.Contains(evs[0].GetMessage(), "tiny image up") {
		t.Errorf("PHONED_HOME events %v", evs)
	}

	// Freed: the agent boots again to erase it, and the old token is void.
	// (The simulated agent is stopped first, or it would erase the machine
	// at once and make it Ready before the boot request.)
	a.Stop()
	if _, err := l.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	if _, s := l.get(t, "/ipxe/script?uuid="+uuid+"&mac="+mac); !strings.Contains(s, "kernel "+l.base+"/files/agent-kernel") || !strings.Contains(s, "reclaimed") {
		t.Errorf("freed machine not sent to the agent:\n%s", s)
	}
	if code, body := l.phoneHome(t, inst.GetPhoneHomeToken()); code != http.StatusConflict {
		t.Errorf("phone home after free: %d %s", code, body)
	}
}

func TestBootRequestsWithBadInput(t *testing.T) {
	l := startBootLab(t)
	for _, q := range []string{"", "?uuid=not-a-uuid", "?mac=zz:zz", "?uuid=00000000-0000-0000-0000-000000000000", "?mac=52:54:00:00:00:01:02:03"} {
		if resp, body := l.get(t, "/ipxe/script"+q); resp.StatusCode != http.StatusBadRequest || body == "" {
			t.Errorf("script%s: %d %q, want 400 with a message", q, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/files/nope", "/files/secret", "/images/../secret", "/images/%2e%2e/secret", "/images/"} {
		if resp, body := l.get(t, p); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMovedPermanently {
			t.Errorf("%s: %d %q, want 404", p, resp.StatusCode, body)
		} else if strings.Contains(body, "do not serve") {
			t.Errorf("%s served a file outside the image dir", p)
		}
	}
}

func TestBootFilesHonourRangesAndETags(t *testing.T) {
	l := startBootLab(t)
	resp, body := l.get(t, "/files/agent-kernel")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || body != "KERNEL-0123456789" || resp.ContentLength != 17 || etag == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("kernel: %d %q len %d etag %q", resp.StatusCode, body, resp.ContentLength, etag)
	}
	resp, body = l.get(t, "/files/agent-kernel", "Range", "bytes=7-10")
	if resp.StatusCode != http.StatusPartialContent || body != "0123" || resp.Header.Get("Content-Range") != "bytes 7-10/17" {
		t.Errorf("range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	resp, _ = l.get(t, "/files/agent-kernel", "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = l.get(t, "/files/agent-kernel", "Range", "bytes=7-10", "If-Range", `"other"`)
	if resp.StatusCode != 200 || body != "KERNEL-0123456789" {
		t.Errorf("If-Range with a stale ETag must send everything: %d %q", resp.StatusCode, body)
	}
	resp, _ = l.get(t, "/files/agent-kernel", "Range", "bytes=100-")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d", resp.StatusCode)
	}
	if resp, body := l.get(t, "/images/tiny.raw", "Range", "bytes=6-"); resp.StatusCode != http.StatusPartialContent || body != "BYTES" {
		t.Errorf("image range: %d %q", resp.StatusCode, body)
	}
}
