package qmp

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
)

// Protocol tests against a fake QMP server on a real unix socket: the exact
// bytes sent (QMP spec: one JSON object per command, "execute",
// "arguments", "id"), and every way a reply can go wrong.

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}` + "\r\n"

// fakeQMP accepts connections and runs handle on each; it records the
// bytes every client sent.
type fakeQMP struct {
	socket string
	mu     sync.Mutex
	sent   bytes.Buffer
}

type peer struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

func newFake(t *testing.T, handle func(p *peer)) *fakeQMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "anvil-fakeqmp-")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{socket: filepath.Join(dir, "qmp.sock")}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := io.TeeReader(c, writerFunc(func(b []byte) (int, error) {
					f.mu.Lock()
					defer f.mu.Unlock()
					return f.sent.Write(b)
				}))
				handle(&peer{t: t, conn: c, dec: json.NewDecoder(r)})
			}()
		}
	}()
	return f
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }

func (f *fakeQMP) received() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent.String()
}

func (p *peer) send(s string) {
	if _, err := io.WriteString(p.conn, s); err != nil {
		p.t.Logf("fake QMP write: %v", err)
	}
}

type cmd struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// recv reads one command; ok is false once the client is gone.
func (p *peer) recv() (cmd, bool) {
	var c cmd
	if err := p.dec.Decode(&c); err != nil {
		return c, false
	}
	return c, true
}

// replies answers every command with "return" (the value in answers, or
// {}), QMP's RESET event after system_reset, and an event before each
// reply to check that events are skipped.
func replies(answers map[string]string) func(p *peer) {
	return func(p *peer) {
		p.send(greeting)
		for {
			c, ok := p.recv()
			if !ok {
				return
			}
			p.send(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "NIC_RX_FILTER_CHANGED", "data": {}}` + "\r\n")
			ret, ok := answers[c.Execute+" "+string(c.Arguments)]
			if !ok {
				ret, ok = answers[c.Execute]
			}
			if !ok {
				ret = "{}"
				if c.Execute == "query-block" {
					ret = "[]" // no block device: SeaBIOS, no pflash
				}
			}
			if strings.HasPrefix(ret, `{"error"`) {
				p.send(strings.TrimSuffix(ret, "}") + `, "id": ` + string(c.ID) + "}\r\n")
				continue
			}
			p.send(`{"return": ` + ret + `, "id": ` + string(c.ID) + "}\r\n")
			if c.Execute == "system_reset" {
				p.send(`{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}` + "\r\n")
			}
		}
	}
}

func lines(cmds ...string) string {
	var b strings.Builder
	for i, c := range cmds {
		fmt.Fprintf(&b, c+"\n", fmt.Sprintf(`"id":"anvil-%d"`, i+1))
	}
	return b.String()
}

const (
	running = `{"status": "running", "singlestep": false, "running": true}`
	paused  = `{"status": "paused", "singlestep": false, "running": false}`
	noDevs  = `[{"name": "type", "type": "string"}]`
)

func TestCommandBytes(t *testing.T) {
	caps := `{"execute":"qmp_capabilities",%s}`
	for _, tc := range []struct {
		name    string
		answers map[string]string
		op      func(context.Context, *BMC) error
		want    string
	}{
		{"power off", nil, func(ctx context.Context, q *BMC) error { return q.PowerOff(ctx) },
			lines(caps, `{"execute":"stop",%s}`, `{"execute":"system_reset",%s}`)},
		{"power on when off", map[string]string{"query-status": paused}, func(ctx context.Context, q *BMC) error { return q.PowerOn(ctx) },
			lines(caps, `{"execute":"query-status",%s}`, `{"execute":"system_reset",%s}`, `{"execute":"cont",%s}`)},
		{"power on when on", map[string]string{"query-status": running}, func(ctx context.Context, q *BMC) error { return q.PowerOn(ctx) },
			lines(caps, `{"execute":"query-status",%s}`)},
		{"reset when on", map[string]string{"query-status": running}, func(ctx context.Context, q *BMC) error { return q.Reset(ctx) },
			lines(caps, `{"execute":"system_reset",%s}`, `{"execute":"query-status",%s}`)},
		{"reset when off", map[string]string{"query-status": paused}, func(ctx context.Context, q *BMC) error { return q.Reset(ctx) },
			lines(caps, `{"execute":"system_reset",%s}`, `{"execute":"query-status",%s}`, `{"execute":"cont",%s}`)},
		{"status", map[string]string{"query-status": running, "qom-list": noDevs},
			func(ctx context.Context, q *BMC) error { _, err := q.Status(ctx); return err },
			lines(caps, `{"execute":"query-status",%s}`, `{"execute":"query-block",%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral"},%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral-anon"},%s}`)},
		{"set next boot disk", map[string]string{
			`qom-list {"path":"/machine/peripheral"}`:                             `[{"name": "type", "type": "string"}, {"name": "net0", "type": "child<virtio-net-pci>"}, {"name": "disk0", "type": "child<virtio-blk-pci>"}]`,
			`qom-list {"path":"/machine/peripheral-anon"}`:                        `{"error": {"class": "DeviceNotFound", "desc": "Device '/machine/peripheral-anon' not found"}}`,
			`qom-list {"path":"/machine/peripheral/net0"}`:                        `[{"name": "mac", "type": "str"}, {"name": "netdev", "type": "str"}, {"name": "bootindex", "type": "int32"}]`,
			`qom-list {"path":"/machine/peripheral/disk0"}`:                       `[{"name": "drive", "type": "str"}, {"name": "bootindex", "type": "int32"}]`,
			`qom-get {"path":"/machine/peripheral/net0","property":"bootindex"}`:  `1`,
			`qom-get {"path":"/machine/peripheral/disk0","property":"bootindex"}`: `2`,
		}, func(ctx context.Context, q *BMC) error { return q.SetNextBoot(ctx, bmc.BootDisk) },
			lines(caps, `{"execute":"query-block",%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral"},%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral/net0"},%s}`,
				`{"execute":"qom-get","arguments":{"path":"/machine/peripheral/net0","property":"bootindex"},%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral/disk0"},%s}`,
				`{"execute":"qom-get","arguments":{"path":"/machine/peripheral/disk0","property":"bootindex"},%s}`,
				`{"execute":"qom-list","arguments":{"path":"/machine/peripheral-anon"},%s}`,
				`{"execute":"qom-set","arguments":{"path":"/machine/peripheral/disk0","property":"bootindex","value":3},%s}`,
				`{"execute":"qom-set","arguments":{"path":"/machine/peripheral/net0","property":"bootindex","value":4},%s}`,
				`{"execute":"qom-set","arguments":{"path":"/machine/peripheral/disk0","property":"bootindex","value":1},%s}`,
				`{"execute":"qom-set","arguments":{"path":"/machine/peripheral/net0","property":"bootindex","value":2},%s}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, replies(tc.answers))
			if err := tc.op(t.Context(), New(f.socket, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if got := f.received(); got != tc.want {
				t.Errorf("sent:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestUEFIBootOrderLeftAlone: on an OVMF VM (a pflash drive) no boot
// index is touched; next boot PXE is what the firmware's BootOrder does
// already, next boot disk is refused, and Status says who decides.
func TestUEFIBootOrderLeftAlone(t *testing.T) {
	// libvirt's -blockdev: no device name, the flash device's path.
	ovmf := map[string]string{"query-block": `[{"device": "", "qdev": "/machine/system.flash0"}, {"device": "", "qdev": "/machine/system.flash1"}]`, "query-status": running}
	caps := `{"execute":"qmp_capabilities",%s}`
	f := newFake(t, replies(ovmf))
	q := New(f.socket, 5*time.Second)
	if err := q.SetNextBoot(t.Context(), bmc.BootPXE); err != nil {
		t.Fatal(err)
	}
	if got, want := f.received(), lines(caps, `{"execute":"query-block",%s}`); got != want {
		t.Errorf("sent:\n%s\nwant:\n%s", got, want)
	}
	if err := q.SetNextBoot(t.Context(), bmc.BootDisk); !errors.Is(err, bmc.ErrRefused) || !strings.Contains(err.Error(), "BootNext") {
		t.Errorf("next boot disk on UEFI: %v", err)
	}
	st, err := q.Status(t.Context())
	if err != nil || st.NextBoot != bmc.BootUnspecified || !strings.Contains(st.Detail, "UEFI firmware: its BootOrder decides") {
		t.Errorf("status %+v %v", st, err)
	}
}

func TestStatusDecoding(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   bmc.PowerState
	}{
		{"running", bmc.PowerOn}, {"suspended", bmc.PowerOn}, {"paused", bmc.PowerOff}, {"prelaunch", bmc.PowerOff},
		{"shutdown", bmc.PowerOff}, {"guest-panicked", bmc.PowerOff}, {"internal-error", bmc.PowerOff},
	} {
		f := newFake(t, replies(map[string]string{
			"query-status": fmt.Sprintf(`{"status": %q, "running": %v}`, tc.status, tc.status == "running"),
			"qom-list":     noDevs,
		}))
		st, err := New(f.socket, 5*time.Second).Status(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", tc.status, err)
		}
		if st != (bmc.Status{Power: tc.want, NextBoot: bmc.BootUnspecified, Detail: tc.status}) {
			t.Errorf("%s: %+v, want %v", tc.status, st, tc.want)
		}
	}
}

func TestErrorReply(t *testing.T) {
	f := newFake(t, replies(map[string]string{
		"query-status": paused,
		"cont":         `{"error": {"class": "GenericError", "desc": "Resetting the Virtual Machine is required"}}`,
	}))
	err := New(f.socket, 5*time.Second).PowerOn(t.Context())
	var ce *CommandError
	if !errors.Is(err, bmc.ErrRefused) || !errors.As(err, &ce) || ce.Command != "cont" || ce.Class != "GenericError" {
		t.Fatalf("error reply: %v, want a CommandError for cont", err)
	}
	for _, want := range []string{"power on via qmp://" + f.socket, "cont", "Resetting the Virtual Machine is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// script is a fake server that sends the greeting (unless noGreeting), then
// answers each command with the next reply; "<close>" closes the
// connection and "<hang>" sends nothing more.
func script(noGreeting bool, replies ...string) func(p *peer) {
	return func(p *peer) {
		if !noGreeting {
			p.send(greeting)
		}
		for _, r := range replies {
			c, ok := p.recv()
			if !ok {
				return
			}
			if partial, ok := strings.CutSuffix(r, "<close>"); ok {
				p.send(partial)
				return
			}
			switch r {
			case "<hang>":
				io.Copy(io.Discard, p.conn)
				return
			}
			p.send(strings.ReplaceAll(r, "$ID", string(c.ID)))
		}
		io.Copy(io.Discard, p.conn)
	}
}

func TestBrokenPeers(t *testing.T) {
	ok := `{"return": {}, "id": $ID}`
	for _, tc := range []struct {
		name    string
		server  func(p *peer)
		target  error
		message string
		timeout time.Duration
	}{
		{"no greeting", script(true), bmc.ErrUnreachable, "no answer within", 0},
		{"closed before the greeting", func(p *peer) {}, bmc.ErrUnreachable, "connection closed", 0},
		{"not a greeting", func(p *peer) { p.send(`{"return": {}}`); io.Copy(io.Discard, p.conn) }, bmc.ErrProtocol, "not a QMP greeting", 0},
		{"garbage", func(p *peer) { p.send("\x00\xffnot json"); io.Copy(io.Discard, p.conn) }, bmc.ErrProtocol, "malformed", 0},
		{"a JSON array", func(p *peer) { p.send(`[1,2]`); io.Copy(io.Discard, p.conn) }, bmc.ErrProtocol, "malformed", 0},
		{"closed mid-command", script(false, ok, "<close>"), bmc.ErrUnreachable, "connection closed", 0},
		{"closed mid-reply", script(false, ok, `{"return": {"status": "runn<close>`), bmc.ErrUnreachable, "connection closed", 0},
		{"no reply", script(false, ok, "<hang>"), bmc.ErrUnreachable, "no answer within", 0},
		{"wrong id", script(false, ok, `{"return": {}, "id": "other"}`), bmc.ErrProtocol, `carries id "other"`, 0},
		{"missing id", script(false, ok, `{"return": {"status": "running"}}`), bmc.ErrProtocol, "carries id", 0},
		{"neither return nor error", script(false, ok, `{"id": $ID}`), bmc.ErrProtocol, "neither return nor error", 0},
		{"status of the wrong type", script(false, ok, `{"return": "running", "id": $ID}`), bmc.ErrProtocol, "reply to query-status", 0},
		{"empty status", script(false, ok, `{"return": {}, "id": $ID}`), bmc.ErrProtocol, "no status", 0},
		{"error without id", script(false, ok, `{"error": {"class": "GenericError", "desc": "JSON parse error"}}`), bmc.ErrRefused, "JSON parse error", 0},
		{"capabilities refused", script(false, `{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": $ID}`), bmc.ErrRefused, "qmp_capabilities", 0},
		{"event of the wrong type", script(false, ok, `{"event": 7}`), bmc.ErrProtocol, "malformed", 0},
		{"endless message", func(p *peer) {
			p.send(greeting)
			p.recv()
			p.send(`{"return": "`)
			chunk := strings.Repeat("x", 64<<10)
			for range (maxSessionBytes / len(chunk)) + 2 {
				if _, err := io.WriteString(p.conn, chunk); err != nil {
					return
				}
			}
		}, bmc.ErrProtocol, "more than", 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.server)
			timeout := cmp.Or(tc.timeout, 300*time.Millisecond)
			_, err := New(f.socket, timeout).Status(t.Context())
			if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v, want %v containing %q", err, tc.target, tc.message)
			}
		})
	}
}

// TestEventsBeforeTheGreeting: QEMU sends events queued for the previous
// client (one output buffer per monitor) before the next client's
// greeting, seen on real QEMU in TestQEMUNextBoot under load.
func TestEventsBeforeTheGreeting(t *testing.T) {
	answer := replies(map[string]string{"query-status": paused, "qom-list": noDevs})
	f := newFake(t, func(p *peer) {
		p.send(`{"timestamp": {"seconds": 1796217863, "microseconds": 193172}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}` + "\r\n")
		p.send(`{"timestamp": {"seconds": 1796217863, "microseconds": 193180}, "event": "STOP"}` + "\r\n")
		answer(p)
	})
	st, err := New(f.socket, 5*time.Second).Status(t.Context())
	if err != nil || st.Power != bmc.PowerOff {
		t.Fatalf("status after stale events: %+v, %v", st, err)
	}
}

func TestNoRESETEvent(t *testing.T) {
	f := newFake(t, script(false, `{"return": {}, "id": $ID}`, `{"return": {}, "id": $ID}`, `{"return": {}, "id": $ID}`))
	err := New(f.socket, 300*time.Millisecond).PowerOff(t.Context())
	if !errors.Is(err, bmc.ErrUnreachable) || !strings.Contains(err.Error(), "RESET event") {
		t.Fatalf("power off without a RESET event: %v", err)
	}
}

func TestCallerCancels(t *testing.T) {
	f := newFake(t, script(false, `{"return": {}, "id": $ID}`, "<hang>"))
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := New(f.socket, time.Minute).PowerOff(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, bmc.ErrUnreachable) {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancelled call took %v", d)
	}
}

func TestPlanBootOrder(t *testing.T) {
	nic := func(p string, i int64) bootDevice { return bootDevice{path: p, kind: kindNIC, index: i} }
	disk := func(p string, i int64) bootDevice { return bootDevice{path: p, kind: kindDisk, index: i} }
	other := func(p string, i int64) bootDevice { return bootDevice{path: p, kind: kindOther, index: i} }
	for _, tc := range []struct {
		name  string
		devs  []bootDevice
		want  bmc.BootDevice
		steps []setStep
		err   error
	}{
		{"already pxe first", []bootDevice{disk("d", 2), nic("n", 1)}, bmc.BootPXE, nil, nil},
		{"swap to disk", []bootDevice{disk("d", 2), nic("n", 1)}, bmc.BootDisk,
			[]setStep{{"d", 3}, {"n", 4}, {"d", 1}, {"n", 2}}, nil},
		{"unset indexes get numbers", []bootDevice{disk("d", -1), nic("n", -1)}, bmc.BootPXE,
			[]setStep{{"n", 3}, {"d", 4}, {"n", 1}, {"d", 2}}, nil},
		{"temporary indexes above every current one", []bootDevice{disk("d", 7), nic("n", 9)}, bmc.BootPXE,
			[]setStep{{"n", 10}, {"d", 11}, {"n", 1}, {"d", 2}}, nil},
		{"several of a kind keep their relative order, others go last", []bootDevice{
			nic("n1", 4), nic("n2", 3), disk("d1", 1), disk("d2", -1), other("o", 2), other("x", -1)}, bmc.BootPXE,
			[]setStep{{"n2", 6}, {"n1", 7}, {"d1", 8}, {"d2", 9}, {"o", 10}, {"n2", 1}, {"n1", 2}, {"d1", 3}, {"d2", 4}, {"o", 5}}, nil},
		{"only changed devices move", []bootDevice{disk("d", 1), nic("n", 3), other("o", 2)}, bmc.BootDisk,
			[]setStep{{"n", 5}, {"o", 6}, {"n", 2}, {"o", 3}}, nil},
		{"no nic", []bootDevice{disk("d", 1)}, bmc.BootPXE, nil, bmc.ErrRefused},
		{"no disk", []bootDevice{nic("n", 1), other("o", 2)}, bmc.BootDisk, nil, bmc.ErrRefused},
		{"no room", []bootDevice{disk("d", 1<<31-2), nic("n", 1)}, bmc.BootPXE, nil, bmc.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps, err := planBootOrder(tc.devs, tc.want)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(steps, tc.steps) {
				t.Errorf("steps %v, want %v", steps, tc.steps)
			}
			if err != nil {
				return
			}
			// Replaying the steps never duplicates an index, and ends in
			// the wanted order.
			held := map[string]int64{}
			for _, d := range tc.devs {
				held[d.path] = d.index
			}
			for _, st := range steps {
				for p, i := range held {
					if p != st.path && i == st.index {
						t.Fatalf("step %v: index %d held by %s", st, st.index, p)
					}
				}
				held[st.path] = st.index
			}
			var after []bootDevice
			for _, d := range tc.devs {
				d.index = held[d.path]
				after = append(after, d)
			}
			if got := firstBoot(after); got != tc.want {
				t.Errorf("after the steps the first boot is %v", got)
			}
		})
	}
}

// FuzzSession feeds arbitrary server bytes after the greeting to every
// operation: errors are fine, panics and hangs are not.
func FuzzSession(f *testing.F) {
	f.Add([]byte(`{"return": {}, "id": "anvil-1"}{"return": {"status": "running", "running": true}, "id": "anvil-2"}`))
	f.Add([]byte(`{"return": {}, "id": "anvil-1"}{"return": [{"name": "a", "type": "child<x>"}], "id": "anvil-3"}`))
	f.Add([]byte(`{"return": {}, "id": "anvil-1"}{"event": "RESET"}{"error": {"class": "X"}, "id": "anvil-2"}`))
	f.Add([]byte(`{"return": {}, "id": "anvil-1"}{"return": 1e400, "id": "anvil-2"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, op := range []func(context.Context, *BMC) error{
			func(ctx context.Context, q *BMC) error { _, err := q.Status(ctx); return err },
			func(ctx context.Context, q *BMC) error { return q.PowerOn(ctx) },
			func(ctx context.Context, q *BMC) error { return q.SetNextBoot(ctx, bmc.BootDisk) },
		} {
			q := &BMC{socket: "fuzz", timeout: time.Second, dial: func(context.Context) (net.Conn, error) {
				client, server := net.Pipe()
				go func() {
					defer server.Close()
					go io.Copy(io.Discard, server)
					server.Write([]byte(greeting))
					server.Write(data)
				}()
				return client, nil
			}}
			if err := op(t.Context(), q); err != nil && !errors.Is(err, bmc.ErrUnreachable) && !errors.Is(err, bmc.ErrProtocol) && !errors.Is(err, bmc.ErrRefused) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
		}
	})
}
