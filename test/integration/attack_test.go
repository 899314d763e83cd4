package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/app"
	"github.com/anvil-metal/anvil/controller/boot"
	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

// The attacker suite: a real controller with its boot service on
// loopback, real agents, and an attacker who shares their boot network
// (it knows every UUID and MAC: they are broadcast in the clear). Each
// attack asserts that no state changed and no secret left.

type attackLab struct {
	h    *harness.Controller
	op   harness.Operator
	base string
}

// liveWindow is the controller's live-session window in the suite, short
// so that "the victim's session is gone" takes a second, not 30.
const liveWindow = time.Second

func startAttackLab(t *testing.T, edit func(*app.Config)) *attackLab {
	t.Helper()
	files := t.TempDir()
	for _, f := range []string{"vmlinuz", "initramfs"} {
		if err := os.WriteFile(filepath.Join(files, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := harness.FreePort(t)
	bc := boot.Defaults()
	bc.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	bc.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	bc.Kernel, bc.Initramfs = filepath.Join(files, "vmlinuz"), filepath.Join(files, "initramfs")
	h := harness.StartController(t, t.TempDir(), func(c *app.Config) {
		c.Boot = &bc
		c.Server.LiveWindow = liveWindow
		c.Server.SeenFlushInterval, c.Server.SeenFlushLag, c.Server.HeartbeatInterval = liveWindow/4, liveWindow/4, liveWindow/4
		if edit != nil {
			edit(c)
		}
	})
	return &attackLab{h: h, op: h.Operator(), base: bc.BaseURL}
}

var bootTokenRE = regexp.MustCompile(`anvil\.token=(\S+)`)

// script fetches a machine's boot script from the client address from
// (an address on loopback) and returns its boot token ("" when the
// script carries none).
func (l *attackLab) script(t *testing.T, from, uuid, mac string) string {
	t.Helper()
	if m := bootTokenRE.FindStringSubmatch(l.scriptBody(t, from, uuid, mac)); m != nil {
		return m[1]
	}
	return ""
}

// scriptBody fetches a machine's boot script from the client address from.
func (l *attackLab) scriptBody(t *testing.T, from, uuid, mac string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}
	resp, err := c.Get(l.base + "/ipxe/script?uuid=" + uuid + "&mac=" + mac + "&platform=pcbios")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("script: %d %v\n%s", resp.StatusCode, err, body)
	}
	return string(body)
}

// agentFrom dials the agent API from a loopback address with a token.
func (l *attackLab) agentFrom(t *testing.T, from, tok string) anvilv1.AgentServiceClient {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(l.h.CAPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := grpc.NewClient(l.h.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(pki.Bearer(tok)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return anvilv1.NewAgentServiceClient(conn)
}

func (l *attackLab) machine(t *testing.T, id string) *anvilv1.Machine {
	t.Helper()
	m, err := l.op.Machines.GetMachine(context.Background(), &anvilv1.GetMachineRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (l *attackLab) events(t *testing.T, id string) []*anvilv1.Event {
	t.Helper()
	r, err := l.op.Machines.ListEvents(context.Background(), &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetEvents()
}

func countType(evs []*anvilv1.Event, typ anvilv1.EventType) int {
	n := 0
	for _, e := range evs {
		if e.GetType() == typ {
			n++
		}
	}
	return n
}

func wantState(t *testing.T, m *anvilv1.Machine, want anvilv1.MachineState) {
	t.Helper()
	if m.GetState() != want {
		t.Fatalf("machine %s is %v, want %v (last event %v)", m.GetId(), m.GetState(), want, m.GetLastEvent())
	}
}

func waitState(t *testing.T, l *attackLab, id string, want anvilv1.MachineState) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		m, err := l.op.Machines.GetMachine(context.Background(), &anvilv1.GetMachineRequest{Id: id})
		if err != nil {
			return err
		}
		if m.GetState() != want {
			return fmt.Errorf("state %v, want %v", m.GetState(), want)
		}
		return nil
	})
}

func macOf(i int) string { return harness.Inventory(harness.UUID("x", i), i).GetNics()[0].GetMac() }

// netbootAgent boots a victim the way the lab does: its script from
// 127.0.0.1, then the real runner with that script's token.
func (l *attackLab) netbootAgent(t *testing.T, uuid string, i int) (*harness.Agent, string) {
	t.Helper()
	tok := l.script(t, "127.0.0.1", uuid, macOf(i))
	if !strings.HasPrefix(tok, "anvb_") {
		t.Fatalf("no boot token for %s", uuid)
	}
	a := l.h.StartAgentWithToken(t, uuid, i, tok)
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_READY)
	return a, tok
}

func TestAttackSpoofedAndReplayedScriptRequests(t *testing.T) {
	l := startAttackLab(t, nil)
	ctx := context.Background()
	uuid := harness.UUID("victim", 1)
	victim, victimTok := l.netbootAgent(t, uuid, 1)
	before := len(l.events(t, uuid))

	// 1. The attacker asks for the victim's script (UUID and MAC are
	// public) and registers as the victim while its session is live.
	atk := l.script(t, "127.0.0.2", uuid, macOf(1))
	_, err := l.agentFrom(t, "127.0.0.2", atk).Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 1)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("spoofed registration of a live machine: %v, want PermissionDenied", err)
	}
	// 2. The victim's own token, replayed (it was sniffed off the wire).
	_, err = l.agentFrom(t, "127.0.0.1", victimTok).Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 1)})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "spent") {
		t.Fatalf("replayed boot token: %v, want PermissionDenied (spent)", err)
	}
	// 3. A fresh token sniffed in flight, used from another address.
	sniffed := l.script(t, "127.0.0.1", uuid, macOf(1))
	_, err = l.agentFrom(t, "127.0.0.3", sniffed).Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 1)})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "minted for client 127.0.0.1") {
		t.Fatalf("boot token from another address: %v, want PermissionDenied", err)
	}
	// 4. A token minted without a UUID cannot take a known machine.
	noUUID := l.script(t, "127.0.0.2", "", "52:54:00:aa:bb:cc")
	inv := harness.Inventory(uuid, 1)
	inv.Nics[0].Mac = "52:54:00:aa:bb:cc"
	_, err = l.agentFrom(t, "127.0.0.2", noUUID).Register(ctx, &anvilv1.RegisterRequest{Inventory: inv})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("UUID-less token used for a known machine: %v, want PermissionDenied", err)
	}

	// Nothing changed: the victim is Ready on its own session, which
	// still works; the refusals are on record as security events.
	m := l.machine(t, uuid)
	wantState(t, m, anvilv1.MachineState_MACHINE_STATE_READY)
	if m.GetMacs()[0] != macOf(1) {
		t.Fatalf("the victim's MACs changed: %v", m.GetMacs())
	}
	evs := l.events(t, uuid)
	if countType(evs[before:], anvilv1.EventType_EVENT_TYPE_REGISTERING) != 0 || countType(evs[before:], anvilv1.EventType_EVENT_TYPE_SECURITY) == 0 {
		t.Fatalf("events after the attacks: %v", evs[before:])
	}
	if _, err := anvilv1.NewAgentServiceClient(l.h.Dial("")).Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, grpc.PerRPCCredentials(pki.Bearer(victimCredential(t, victim)))); err != nil {
		t.Fatalf("the victim's credential stopped working: %v", err)
	}
}

// victimCredential registers nothing: it asks the victim's runner for the
// credential it holds, through a Heartbeat it would send anyway.
func victimCredential(t *testing.T, a *harness.Agent) string {
	t.Helper()
	c := a.Runner.Credential()
	if c == "" {
		t.Fatal("the victim's runner holds no credential")
	}
	return c
}

func createImage(t *testing.T, l *attackLab) {
	t.Helper()
	if _, err := l.op.Images.CreateImage(context.Background(), &anvilv1.CreateImageRequest{Image: &anvilv1.Image{Id: "img", Url: l.base + "/images/x",
		Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW, Checksum: "sha256:" + strings.Repeat("0", 64), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE}}}); err != nil {
		t.Fatal(err)
	}
}

func TestAttackRegistrationRaceForAnAllocatedMachine(t *testing.T) {
	l := startAttackLab(t, nil)
	ctx := context.Background()
	uuid := harness.UUID("victim", 2)
	victim, _ := l.netbootAgent(t, uuid, 2)
	createImage(t, l)
	// The victim goes quiet (a power cut, not the controller's doing) and
	// is allocated meanwhile: its install, with secrets, waits for it.
	victim.Stop()
	time.Sleep(liveWindow + 200*time.Millisecond)
	const secret = "password: s3cret"
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img",
		UserData: "#cloud-config\n" + secret + "\n"}); err != nil {
		t.Fatal(err)
	}
	before := l.machine(t, uuid)

	// The attacker wins the race to register (its boot is one the
	// controller did not cause): it is let in, but held.
	tok := l.script(t, "127.0.0.2", uuid, macOf(2))
	inv := harness.Inventory(uuid, 2)
	inv.Cpu.Cores = 1024
	resp, err := l.agentFrom(t, "127.0.0.2", tok).Register(ctx, &anvilv1.RegisterRequest{Inventory: inv})
	if err != nil {
		t.Fatalf("attacker registration: %v", err)
	}
	atk := l.agentFrom(t, "127.0.0.2", resp.GetCredential())
	wantNothing(t, atk)
	_, err = atk.Report(ctx, &anvilv1.ReportRequest{Type: anvilv1.EventType_EVENT_TYPE_FAILED, Message: "x"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("report from a held session: %v, want FailedPrecondition", err)
	}
	m := l.machine(t, uuid)
	wantState(t, m, anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL)
	if m.GetInventory().GetCpu().GetCores() != before.GetInventory().GetCpu().GetCores() || m.GetAllocation().GetUserData() != before.GetAllocation().GetUserData() {
		t.Fatalf("the held registration changed the machine: cores %d, allocation %v", m.GetInventory().GetCpu().GetCores(), m.GetAllocation())
	}
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("allocate a held machine: %v", err)
	}

	// An operator who reinstalls the held machine (to unstick it) does not
	// release anything to the held session either.
	if _, err := l.op.Machines.ReinstallMachine(ctx, &anvilv1.ReinstallMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	wantNothing(t, atk)
	wantState(t, l.machine(t, uuid), anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL)

	// It is the hold that kept the secret in: an operator who approves
	// the session releases the install to it.
	if _, err := l.op.Machines.ApproveMachine(ctx, &anvilv1.ApproveMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	stream, err := atk.Wait(ctx, &anvilv1.WaitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := stream.Recv()
	if err != nil || !strings.Contains(in.GetInstall().GetUserData(), secret) {
		t.Fatalf("after approval: %v %v", in, err)
	}
	if m := l.machine(t, uuid); m.GetInventory().GetCpu().GetCores() != 1024 {
		t.Fatalf("approval did not take the session's inventory: %d cores", m.GetInventory().GetCpu().GetCores())
	}
	if _, err := l.op.Machines.ApproveMachine(ctx, &anvilv1.ApproveMachineRequest{Id: uuid}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("approve twice: %v", err)
	}
}

// wantNothing holds a Wait stream of a held session for 1.5 s: nothing
// but keepalives may come.
func wantNothing(t *testing.T, atk anvilv1.AgentServiceClient) {
	t.Helper()
	wctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	stream, err := atk.Wait(wctx, &anvilv1.WaitRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		in, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("held session's Wait stream: %v", err)
			}
			return
		}
		if in.GetKeepalive() == nil {
			t.Fatalf("a held session received %v", in)
		}
	}
}

// A free (or reinstall) makes the controller expect a boot; while the
// machine's agent is still alive (it never rebooted), nobody else may
// register as it in that window.
func TestAttackExpectedBootWindowWhileLive(t *testing.T) {
	l := startAttackLab(t, nil)
	ctx := context.Background()
	uuid := harness.UUID("victim", 6)
	victim, _ := l.netbootAgent(t, uuid, 6)
	createImage(t, l)
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_BOOTING)
	if _, err := l.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: uuid, EraseMode: anvilv1.EraseMode_ERASE_MODE_QUICK}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_READY) // the live agent erased
	tok := l.script(t, "127.0.0.2", uuid, macOf(6))
	_, err := l.agentFrom(t, "127.0.0.2", tok).Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 6)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("registration in the expected-boot window of a live machine: %v, want PermissionDenied", err)
	}
	if _, err := anvilv1.NewAgentServiceClient(l.h.Dial(victim.Runner.Credential())).Heartbeat(ctx, &anvilv1.HeartbeatRequest{}); err != nil {
		t.Fatalf("the victim lost its session: %v", err)
	}
}

func TestAttackStalePhoneHome(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.PhoneHomeTTL = 2 * time.Second })
	ctx := context.Background()
	uuid := harness.UUID("victim", 3)
	a, _ := l.netbootAgent(t, uuid, 3)
	createImage(t, l)
	phone := func(tok string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, l.base+"/phone-home", strings.NewReader("up"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The agent reports its install as running, never done: INSTALLING.
	a.Install.Close = anvilv1.EventType_EVENT_TYPE_INSTALLING
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_INSTALLING)
	harness.Eventually(t, 10*time.Second, func() error {
		if a.Install.Last() == nil {
			return fmt.Errorf("no install executed")
		}
		return nil
	})
	first := a.Install.Last().GetInstall().GetPhoneHomeToken()
	if code := phone(first); code != http.StatusConflict {
		t.Fatalf("phone home while installing: %d, want 409", code)
	}
	// An agent cannot report PHONED_HOME for it.
	_, err := anvilv1.NewAgentServiceClient(l.h.Dial(a.Runner.Credential())).Report(ctx, &anvilv1.ReportRequest{Type: anvilv1.EventType_EVENT_TYPE_PHONED_HOME})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("agent reporting PHONED_HOME: %v, want InvalidArgument", err)
	}
	// A reinstall revokes the first token.
	a.Install.Close = anvilv1.EventType_EVENT_TYPE_BOOTING
	if _, err := l.op.Machines.ReinstallMachine(ctx, &anvilv1.ReinstallMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_BOOTING)
	second := a.Install.Last().GetInstall().GetPhoneHomeToken()
	if second == first {
		t.Fatal("the reinstall reused the phone-home token")
	}
	if code := phone(first); code != http.StatusUnauthorized {
		t.Fatalf("phone home with the token of before the reinstall: %d, want 401", code)
	}
	// The second expires.
	time.Sleep(2100 * time.Millisecond)
	if code := phone(second); code != http.StatusUnauthorized {
		t.Fatalf("phone home with an expired token: %d, want 401", code)
	}
	wantState(t, l.machine(t, uuid), anvilv1.MachineState_MACHINE_STATE_BOOTING)
	if n := countType(l.events(t, uuid), anvilv1.EventType_EVENT_TYPE_PHONED_HOME); n != 0 {
		t.Fatalf("%d PHONED_HOME events from stale tokens", n)
	}
}

func TestAttackFloods(t *testing.T) {
	tftpFile := filepath.Join(t.TempDir(), "undionly.kpxe")
	if err := os.WriteFile(tftpFile, bytes.Repeat([]byte("iPXE"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	tftpAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	l := startAttackLab(t, func(c *app.Config) {
		c.TFTPListen, c.TFTPFiles = tftpAddr, map[string]string{"undionly.kpxe": tftpFile}
	})
	ctx := context.Background()
	uuid := harness.UUID("victim", 4)
	l.netbootAgent(t, uuid, 4)
	createImage(t, l)
	before := len(l.events(t, uuid))

	// A boot-request flood for a Ready machine (every 30 s used to trip
	// crash-loop detection and block its allocation).
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{}
			for i := range 40 {
				resp, err := c.Get(fmt.Sprintf("%s/ipxe/script?uuid=%s&mac=%s&platform=efi&n=%d-%d", l.base, uuid, macOf(4), w, i))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	m := l.machine(t, uuid)
	wantState(t, m, anvilv1.MachineState_MACHINE_STATE_READY)
	if m.GetCrashLoop() || len(l.events(t, uuid)) != before {
		t.Fatalf("a boot-request flood changed the machine: crash loop %v, %d new events", m.GetCrashLoop(), len(l.events(t, uuid))-before)
	}
	if n := len(m.GetBootObservations()); n == 0 || n > 4 {
		t.Fatalf("%d boot observations kept, want 1..4", n)
	}
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); err != nil {
		t.Fatalf("allocation after the flood: %v", err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_BOOTING) // the agent installs
	before = len(l.events(t, uuid))

	// A Register flood from one address: cut off after the burst.
	junk := l.agentFrom(t, "127.0.0.5", "anv_junk")
	var exhausted int
	for range 80 {
		_, err := junk.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 4)})
		if status.Code(err) == codes.ResourceExhausted {
			exhausted++
		} else if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("junk registration: %v", err)
		}
	}
	if exhausted == 0 {
		t.Fatal("80 registrations in a burst from one address were never limited")
	}
	// Other addresses are not affected.
	_, err := l.agentFrom(t, "127.0.0.6", "anv_junk").Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 4)})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("registration from another address after the flood: %v, want Unauthenticated", err)
	}

	// A TFTP flood: 300 read requests that never acknowledge. At most 64
	// transfers run (one port each); the rest are told "busy".
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	srv, err := net.ResolveUDPAddr("udp4", tftpAddr)
	if err != nil {
		t.Fatal(err)
	}
	rrq := append([]byte{0, 1}, []byte("undionly.kpxe\x00octet\x00")...)
	for range 300 {
		if _, err := pc.WriteTo(rrq, srv); err != nil {
			t.Fatal(err)
		}
	}
	transfers, busy := map[string]bool{}, 0
	buf := make([]byte, 2048)
	for {
		if err := pc.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			break // quiet for a second
		}
		switch {
		case n >= 4 && buf[1] == 3: // DATA
			transfers[from.String()] = true
		case n >= 4 && buf[1] == 5 && bytes.Contains(buf[4:n], []byte("busy")):
			busy++
		}
	}
	if len(transfers) == 0 || len(transfers) > 64 || busy == 0 {
		t.Fatalf("TFTP flood: %d transfers ran, %d requests told busy; want 1..64 and some busy", len(transfers), busy)
	}
	if m := l.machine(t, uuid); m.GetState() != anvilv1.MachineState_MACHINE_STATE_BOOTING || len(l.events(t, uuid)) != before {
		t.Fatalf("after the Register and TFTP floods the machine is %v with %d new events", m.GetState(), len(l.events(t, uuid))-before)
	}
}

func TestEnrollmentPolicyApprove(t *testing.T) {
	l := startAttackLab(t, func(c *app.Config) { c.Server.EnrollPolicy = trust.PolicyApprove })
	ctx := context.Background()
	uuid := harness.UUID("new", 5)
	tok := l.script(t, "127.0.0.1", uuid, macOf(5))
	a := l.h.StartAgentWithToken(t, uuid, 5, tok)
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_AWAITING_APPROVAL)
	createImage(t, l)
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("allocation of a machine awaiting approval: %v", err)
	}
	if _, err := l.op.Machines.ApproveMachine(ctx, &anvilv1.ApproveMachineRequest{Id: uuid}); err != nil {
		t.Fatal(err)
	}
	waitState(t, l, uuid, anvilv1.MachineState_MACHINE_STATE_READY)
	if _, err := l.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: uuid, ImageId: "img"}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if a.Install.Last() == nil {
			return fmt.Errorf("no install")
		}
		return nil
	})
}
