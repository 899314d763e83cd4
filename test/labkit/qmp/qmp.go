// Package qmp is the QEMU lab's fake BMC: a bmc.Driver that powers a QEMU
// VM and chooses its next boot device by speaking the QEMU Machine Protocol
// (JSON over the VM's QMP unix socket; QEMU docs/interop/qmp-spec) to the
// QEMU process running it. It is test code: the controller's bmc.Open knows
// only IPMI and Redfish; in the lab, ipmi_sim's chassis program
// (test/labkit/cmd/anvil-lab-chassis) and the lab's Redfish service
// (test/labkit/cmd/anvil-lab-redfish) call it, so the controller reaches a
// VM through the same drivers it uses on real servers. Its errors wrap
// bmc's sentinels (bmc.ErrUnreachable, bmc.ErrRefused, bmc.ErrProtocol).
// Package qemutest, below it, starts the real QEMU VMs its tests drive.
//
// # Power model
//
// QMP cannot start a QEMU process, so "off" is a VM frozen at reset: QEMU
// must run with "-no-shutdown" (a guest power-off stops the VM and leaves
// QEMU alive instead of exiting) and "-qmp unix:PATH,server=on,wait=off",
// optionally with "-S" to start off (QEMUArgs returns these flags).
//
//   - PowerOff: "stop", then "system_reset" (waiting for QEMU's RESET
//     event): the CPUs do not run and the next start is a cold boot.
//   - PowerOn: nothing when the VM runs already; else "system_reset", then
//     "cont".
//   - Reset: "system_reset", then "cont" unless the VM runs; an off VM is
//     thus powered on (as most BMCs do).
//   - Status: "query-status": QMP status "running" (or "suspended", an
//     ACPI S3 sleep: power is on) is on, every other status off —
//     "prelaunch" (-S, or reset while stopped), "paused" (stop), "shutdown"
//     (the guest powered off under -no-shutdown), and error stops such as
//     "guest-panicked" or "internal-error". bmc.Status.Detail keeps QMP's
//     word.
//
// # Next boot device
//
// QEMU has no QMP command for a one-time boot override ("-boot once" is
// command-line only, and only for the legacy boot order), but a device's
// "bootindex" property can be changed at runtime with "qom-set", and QEMU
// rebuilds the firmware's "bootorder" fw_cfg file from the boot indexes on
// every system reset (fw_cfg_machine_reset). SeaBIOS reads that file at
// boot (OVMF does too, but the UEFI path is not tested here), so
// SetNextBoot renumbers the boot indexes of the VM's devices that have
// one — NICs (a "netdev" and a "mac" property) first for bmc.BootPXE, disks
// (a "drive" property) first for bmc.BootDisk, every other device after
// them — under /machine/peripheral and /machine/peripheral-anon. Verified
// against QEMU 7.2 with SeaBIOS (see the tests: SeaBIOS's debug console
// shows the order it reads and the device it boots).
//
// Limits, stated plainly:
//   - The order is persistent, like Redfish's BootSourceOverrideEnabled
//     "Continuous": every later boot (also a reboot by the guest) uses it
//     until SetNextBoot changes it. There is no "once".
//   - It takes effect at the next reset; PowerOn and Reset always reset, so
//     a SetNextBoot before them applies to the boot they start. It does not
//     survive a restart of the QEMU process (the command line rules again).
//   - Only devices QEMU gives a "bootindex" property (virtio-net, e1000,
//     virtio-blk, scsi-hd, ide-hd, nvme, ...) can be ordered. A VM with no
//     NIC (or no disk) has nothing to put first: SetNextBoot fails with
//     bmc.ErrRefused. Changing indexes takes two qom-set passes (QEMU
//     refuses duplicate indexes); a failure between them leaves a
//     consistent but unintended order, which the next SetNextBoot corrects.
//   - Devices without a bootindex on the command line get one from the
//     first SetNextBoot (tested). Mixing with "-boot order=" is not tested:
//     give the lab's devices bootindex properties instead.
//   - What happens when the first device fails to boot (a PXE boot without
//     an answer) is up to the firmware; SeaBIOS moves on to the next entry
//     of the order, as it does for the blank disk in the tests.
//   - UEFI VMs (OVMF, found by its pflash drive) are left alone: with boot
//     indexes QEMU hands OVMF a bootorder, and OVMF then rewrites BootOrder
//     at every boot and deletes the entries it does not match — the boot
//     entry anvil-agent keeps for the installed disk among them. A UEFI
//     VM's boot order is its NVRAM's, as on a server: the network first
//     (the agent keeps it so), so SetNextBoot(bmc.BootPXE) succeeds
//     without a change and SetNextBoot(bmc.BootDisk) is refused (that would
//     need the firmware's BootNext variable); Status reports no next boot
//     device.
//
// # Connections
//
// Every operation opens its own QMP connection, negotiates capabilities and
// closes it, so a restarted QEMU is picked up and no connection is held
// between calls. QEMU serves one QMP client per socket at a time: while
// another client is connected the greeting does not come, and the call
// fails with bmc.ErrUnreachable after the timeout (New's, default
// bmc.DefaultTimeout). Callers serialize operations on one BMC themselves.
package qmp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
)

// maxSessionBytes caps what one QMP session may read: a qom-list of a
// device is a few KiB, a whole SetNextBoot session well under 1 MiB.
const maxSessionBytes = 8 << 20

// BMC is the bmc.Driver for one QEMU VM, spoken to over its QMP unix
// socket. See the package comment for the power model and the boot order.
type BMC struct {
	socket  string
	timeout time.Duration
	dial    func(ctx context.Context) (net.Conn, error)
}

var _ bmc.Driver = (*BMC)(nil)

// New returns the driver for the QMP socket at socket; timeout bounds
// each operation as a whole (connect, greeting and every command).
func New(socket string, timeout time.Duration) *BMC {
	if timeout <= 0 {
		timeout = bmc.DefaultTimeout
	}
	return &BMC{socket: socket, timeout: timeout, dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
}

// CommandError is a QMP error reply. It matches bmc.ErrRefused with
// errors.Is.
type CommandError struct {
	Command string
	// Class is QMP's error class, e.g. "GenericError", "DeviceNotFound".
	Class string
	Desc  string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%v: %s: %s: %s", bmc.ErrRefused, e.Command, e.Class, e.Desc)
}

// Is makes errors.Is(err, bmc.ErrRefused) true.
func (e *CommandError) Is(target error) bool { return target == bmc.ErrRefused }

// PowerOn resets and starts a VM that is not running; a running one is left
// alone.
func (q *BMC) PowerOn(ctx context.Context) error {
	return q.do(ctx, "power on", func(s *session) error {
		st, err := s.queryStatus()
		if err != nil {
			return err
		}
		if powerOf(st.Status) == bmc.PowerOn {
			return nil
		}
		if err := s.reset(); err != nil {
			return err
		}
		return s.execute("cont", nil, nil)
	})
}

// PowerOff stops the VM and resets it: it stays frozen at reset.
func (q *BMC) PowerOff(ctx context.Context) error {
	return q.do(ctx, "power off", func(s *session) error {
		if err := s.execute("stop", nil, nil); err != nil {
			return err
		}
		return s.reset()
	})
}

// Reset resets the VM and makes it run (an off VM is powered on).
func (q *BMC) Reset(ctx context.Context) error {
	return q.do(ctx, "reset", func(s *session) error {
		if err := s.reset(); err != nil {
			return err
		}
		st, err := s.queryStatus()
		if err != nil {
			return err
		}
		if st.Running {
			return nil
		}
		return s.execute("cont", nil, nil)
	})
}

// Status reads the run state and the boot order.
func (q *BMC) Status(ctx context.Context) (bmc.Status, error) {
	var out bmc.Status
	err := q.do(ctx, "status", func(s *session) error {
		st, err := s.queryStatus()
		if err != nil {
			return err
		}
		out = bmc.Status{Power: powerOf(st.Status), Detail: st.Status}
		uefi, err := s.uefi()
		if err != nil {
			return err
		}
		if uefi {
			out.Detail += "; UEFI firmware: its BootOrder decides, next boot " + uefiNextBoot
			return nil
		}
		devs, err := s.bootDevices()
		if err != nil {
			return err
		}
		out.NextBoot = firstBoot(devs)
		return nil
	})
	return out, err
}

// uefiNextBoot says how the next boot is chosen on a UEFI VM.
const uefiNextBoot = "network (kept first by the agent)"

// SetNextBoot renumbers the devices' boot indexes so that dev's kind comes
// first; QEMU hands the new order to the firmware at the next reset.
func (q *BMC) SetNextBoot(ctx context.Context, dev bmc.BootDevice) error {
	if dev != bmc.BootPXE && dev != bmc.BootDisk {
		return fmt.Errorf("set next boot: unknown boot device %v", dev)
	}
	return q.do(ctx, "set next boot "+dev.String(), func(s *session) error {
		uefi, err := s.uefi()
		if err != nil {
			return err
		}
		if uefi {
			// QEMU's bootorder would make OVMF rewrite BootOrder and delete
			// the boot entries of the installed system: leave it alone.
			if dev == bmc.BootPXE {
				return nil // the network is first in BootOrder already
			}
			return fmt.Errorf("%w: a one-time boot from disk on a UEFI VM needs the firmware's BootNext, which QMP cannot set; the boot service's loop guard sends an installed machine to its disk", bmc.ErrRefused)
		}
		devs, err := s.bootDevices()
		if err != nil {
			return err
		}
		steps, err := planBootOrder(devs, dev)
		if err != nil {
			return err
		}
		for _, st := range steps {
			if err := s.execute("qom-set", qomSetArgs{Path: st.path, Property: "bootindex", Value: st.index}, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// powerOf maps a QMP RunState to a power state.
func powerOf(status string) bmc.PowerState {
	switch status {
	case "running", "suspended":
		return bmc.PowerOn
	case "":
		return bmc.PowerUnknown
	}
	return bmc.PowerOff
}

func (q *BMC) do(ctx context.Context, op string, fn func(*session) error) error {
	s, err := q.open(ctx)
	if err == nil {
		err = fn(s)
		if cerr := s.close(); err == nil && cerr != nil {
			err = fmt.Errorf("%w: close: %v", bmc.ErrUnreachable, cerr)
		}
	}
	if err != nil {
		return fmt.Errorf("%s via qmp://%s: %w", op, q.socket, err)
	}
	return nil
}

// session is one QMP connection, after the capabilities negotiation.
type session struct {
	conn    net.Conn
	lim     *io.LimitedReader
	dec     *json.Decoder
	parent  context.Context // the caller's
	ctx     context.Context // with the timeout
	timeout time.Duration
	cancel  context.CancelFunc
	stop    func() bool
	nextID  int
	events  []string
}

// message is any QMP server message: greeting, reply or event.
type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	ID    json.RawMessage `json:"id"`
	raw   json.RawMessage // the message as received, for errors
}

type command struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

func (q *BMC) open(parent context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(parent, q.timeout)
	conn, err := q.dial(ctx)
	if err != nil {
		cancel()
		if perr := parent.Err(); perr != nil {
			return nil, fmt.Errorf("connect: %w", perr)
		}
		return nil, fmt.Errorf("%w: connect: %v", bmc.ErrUnreachable, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			cancel()
			return nil, fmt.Errorf("%w: set deadline: %v", bmc.ErrUnreachable, err)
		}
	}
	lim := &io.LimitedReader{R: conn, N: maxSessionBytes}
	s := &session{conn: conn, lim: lim, dec: json.NewDecoder(lim), parent: parent, ctx: ctx, timeout: q.timeout, cancel: cancel}
	// A cancelled context unblocks reads and writes at once.
	s.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	m, err := s.read("greeting")
	// QEMU keeps one output buffer per monitor, not per connection: an
	// event queued while the previous client was leaving (a guest
	// SHUTDOWN, say) reaches the next client before its greeting. Such
	// stale events are skipped; anything else first is a protocol error.
	for err == nil && m.QMP == nil && m.Event != "" {
		m, err = s.read("greeting")
	}
	if err == nil && m.QMP == nil {
		err = fmt.Errorf("%w: the first message is not a QMP greeting: %.200s", bmc.ErrProtocol, m.raw)
	}
	if err == nil {
		err = s.execute("qmp_capabilities", nil, nil)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *session) close() error {
	s.stop()
	s.cancel()
	return s.conn.Close()
}

// fail classifies an I/O or decoding error of what.
func (s *session) fail(what string, err error) error {
	if perr := s.parent.Err(); perr != nil {
		return fmt.Errorf("%s: %w", what, perr)
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case s.ctx.Err() != nil || errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err):
		return fmt.Errorf("%w: %s: no answer within %v (is another QMP client connected?)", bmc.ErrUnreachable, what, s.timeout)
	case s.lim.N <= 0:
		return fmt.Errorf("%w: %s: the BMC sent more than %d bytes", bmc.ErrProtocol, what, maxSessionBytes)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %s: connection closed by QEMU", bmc.ErrUnreachable, what)
	case errors.As(err, &syn), errors.As(err, &typ):
		return fmt.Errorf("%w: %s: malformed message: %v", bmc.ErrProtocol, what, err)
	}
	return fmt.Errorf("%w: %s: %v", bmc.ErrUnreachable, what, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// read decodes the next message.
func (s *session) read(what string) (*message, error) {
	var raw json.RawMessage
	if err := s.dec.Decode(&raw); err != nil {
		return nil, s.fail(what, err)
	}
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, s.fail(what, err)
	}
	m.raw = raw
	return &m, nil
}

// execute sends one command and waits for its reply, keeping the names of
// the events that arrive meanwhile. out, when not nil, receives the return
// value.
func (s *session) execute(cmd string, args, out any) error {
	s.nextID++
	id := fmt.Sprintf("anvil-%d", s.nextID)
	b, err := json.Marshal(command{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("encode %s: %w", cmd, err)
	}
	if _, err := s.conn.Write(append(b, '\n')); err != nil {
		return s.fail("send "+cmd, err)
	}
	wantID, _ := json.Marshal(id)
	for {
		m, err := s.read("reply to " + cmd)
		if err != nil {
			return err
		}
		if m.Event != "" {
			s.events = append(s.events, m.Event)
			continue
		}
		if m.Error == nil && m.Return == nil {
			return fmt.Errorf("%w: reply to %s has neither return nor error", bmc.ErrProtocol, cmd)
		}
		// QEMU echoes the id; only an error to a command it could not
		// parse comes without one.
		if (m.ID != nil || m.Error == nil) && string(m.ID) != string(wantID) {
			return fmt.Errorf("%w: reply to %s carries id %s, want %s", bmc.ErrProtocol, cmd, m.ID, wantID)
		}
		if m.Error != nil {
			return &CommandError{Command: cmd, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if out != nil {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("%w: reply to %s: %v", bmc.ErrProtocol, cmd, err)
			}
		}
		return nil
	}
}

// reset executes system_reset and waits for QEMU's RESET event: the reset
// is carried out by QEMU's main loop, and a cont sent before it would find
// a shut-down VM still needing its reset.
func (s *session) reset() error {
	mark := len(s.events)
	if err := s.execute("system_reset", nil, nil); err != nil {
		return err
	}
	for {
		if slices.Contains(s.events[mark:], "RESET") {
			return nil
		}
		m, err := s.read("RESET event")
		if err != nil {
			return err
		}
		if m.Event == "" {
			return fmt.Errorf("%w: unexpected reply while waiting for the RESET event", bmc.ErrProtocol)
		}
		s.events = append(s.events, m.Event)
	}
}

type runStatus struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

func (s *session) queryStatus() (runStatus, error) {
	var st runStatus
	if err := s.execute("query-status", nil, &st); err != nil {
		return st, err
	}
	if st.Status == "" {
		return st, fmt.Errorf("%w: query-status returned no status", bmc.ErrProtocol)
	}
	return st, nil
}

// uefi reports whether the VM runs OVMF: its firmware is on a pflash
// drive (SeaBIOS comes from QEMU's ROM).
func (s *session) uefi() (bool, error) {
	var blocks []struct {
		Device string `json:"device"`
		QDev   string `json:"qdev"`
	}
	if err := s.execute("query-block", nil, &blocks); err != nil {
		return false, err
	}
	for _, b := range blocks {
		// -drive if=pflash names it pflash0; -blockdev (libvirt) leaves the
		// name empty, the flash device's path stays.
		if b.Device == "pflash0" || strings.HasPrefix(b.QDev, "/machine/system.flash") {
			return true, nil
		}
	}
	return false, nil
}

type pathArgs struct {
	Path string `json:"path"`
}

type qomGetArgs struct {
	Path     string `json:"path"`
	Property string `json:"property"`
}

type qomSetArgs struct {
	Path     string `json:"path"`
	Property string `json:"property"`
	Value    int64  `json:"value"`
}

type qomProperty struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// devKind is how a device takes part in the boot order.
type devKind int

const (
	kindOther devKind = iota
	kindNIC
	kindDisk
)

// bootDevice is a QOM device with a bootindex property.
type bootDevice struct {
	path  string
	kind  devKind
	index int64 // -1: not in the boot order
}

// Containers of the user-created devices: with an id, and without.
const (
	peripheral     = "/machine/peripheral"
	peripheralAnon = "/machine/peripheral-anon"
)

// bootDevices lists the devices with a bootindex property, by path.
func (s *session) bootDevices() ([]bootDevice, error) {
	var devs []bootDevice
	for _, root := range []string{peripheral, peripheralAnon} {
		var children []qomProperty
		if err := s.execute("qom-list", pathArgs{root}, &children); err != nil {
			var ce *CommandError
			if root == peripheralAnon && errors.As(err, &ce) && ce.Class == "DeviceNotFound" {
				continue // created only once a device without id exists
			}
			return nil, err
		}
		for _, c := range children {
			if !strings.HasPrefix(c.Type, "child<") {
				continue
			}
			p := root + "/" + c.Name
			var props []qomProperty
			if err := s.execute("qom-list", pathArgs{p}, &props); err != nil {
				return nil, err
			}
			has := map[string]bool{}
			for _, pr := range props {
				has[pr.Name] = true
			}
			if !has["bootindex"] {
				continue
			}
			d := bootDevice{path: p}
			if err := s.execute("qom-get", qomGetArgs{Path: p, Property: "bootindex"}, &d.index); err != nil {
				return nil, err
			}
			switch {
			case has["netdev"] && has["mac"]:
				d.kind = kindNIC
			case has["drive"]:
				d.kind = kindDisk
			}
			devs = append(devs, d)
		}
	}
	slices.SortFunc(devs, func(a, b bootDevice) int { return cmp.Compare(a.path, b.path) })
	return devs, nil
}

// firstBoot is the kind of the device with the lowest boot index.
func firstBoot(devs []bootDevice) bmc.BootDevice {
	var first *bootDevice
	for i := range devs {
		if d := &devs[i]; d.index >= 0 && (first == nil || d.index < first.index) {
			first = d
		}
	}
	switch {
	case first == nil:
		return bmc.BootUnspecified
	case first.kind == kindNIC:
		return bmc.BootPXE
	case first.kind == kindDisk:
		return bmc.BootDisk
	}
	return bmc.BootUnspecified
}

// setStep is one qom-set of a bootindex.
type setStep struct {
	path  string
	index int64
}

// planBootOrder computes the qom-set steps that put the devices of kind
// want first: those, then the other kind of NIC/disk, then the other
// devices that are in the order; each group by its current index (unset
// last), then by path. Final indexes are 1, 2, 3, ... QEMU refuses an
// index another device holds, so devices that change move to fresh
// indexes above every current one first, then to their final ones. Nothing
// to change gives no steps.
func planBootOrder(devs []bootDevice, want bmc.BootDevice) ([]setStep, error) {
	first, second := kindNIC, kindDisk
	if want == bmc.BootDisk {
		first, second = kindDisk, kindNIC
	}
	group := func(k devKind) []bootDevice {
		var g []bootDevice
		for _, d := range devs {
			if d.kind == k && (k != kindOther || d.index >= 0) {
				g = append(g, d)
			}
		}
		slices.SortStableFunc(g, func(a, b bootDevice) int {
			if (a.index < 0) != (b.index < 0) {
				return cmp.Compare(b.index, a.index) // set before unset
			}
			return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(a.path, b.path))
		})
		return g
	}
	lead := group(first)
	if len(lead) == 0 {
		what := "NIC (a device with netdev, mac and bootindex properties)"
		if want == bmc.BootDisk {
			what = "disk (a device with drive and bootindex properties)"
		}
		return nil, fmt.Errorf("%w: boot from %v: the VM has no %s", bmc.ErrRefused, want, what)
	}
	order := slices.Concat(lead, group(second), group(kindOther))
	var highest int64
	for _, d := range devs {
		highest = max(highest, d.index)
	}
	base := max(highest, int64(len(order))) + 1
	if base+int64(len(order)) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: boot indexes up to %d leave no room to reorder", bmc.ErrRefused, highest)
	}
	var moves, finals []setStep
	for i, d := range order {
		final := int64(i + 1)
		if d.index == final {
			continue
		}
		moves = append(moves, setStep{d.path, base + int64(i)})
		finals = append(finals, setStep{d.path, final})
	}
	return append(moves, finals...), nil
}

// QEMUArgs returns the QEMU command-line flags the driver relies on: the
// QMP socket at socket, -no-shutdown, and -S when the VM should start
// powered off. Give devices boot indexes (bootindex=N) so that the firmware
// honours SetNextBoot from the first boot on; see the package comment.
func QEMUArgs(socket string, startOff bool) []string {
	args := []string{"-qmp", "unix:" + socket + ",server=on,wait=off", "-no-shutdown"}
	if startOff {
		args = append(args, "-S")
	}
	return args
}
