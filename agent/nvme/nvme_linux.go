package nvme

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux ioctls (include/uapi/linux/nvme_ioctl.h).
const (
	ioctlAdminCmd = 0xC0484E41 // _IOWR('N', 0x41, struct nvme_admin_cmd)
	ioctlID       = 0x4E40     // _IO('N', 0x40): the namespace id of a block device
)

// Submitter runs one admin command with its data buffer.
type Submitter interface {
	Submit(cmd *Command, data []byte) (result uint32, err error)
}

// ioctlSubmitter submits through NVME_IOCTL_ADMIN_CMD on an open device.
type ioctlSubmitter struct{ f *os.File }

func (s ioctlSubmitter) Submit(cmd *Command, data []byte) (uint32, error) {
	c := *cmd
	if len(data) > 0 {
		c.Addr = uint64(uintptr(unsafe.Pointer(&data[0])))
		c.DataLen = uint32(len(data))
	}
	raw := c.Marshal()
	r, _, e := unix.Syscall(unix.SYS_IOCTL, s.f.Fd(), ioctlAdminCmd, uintptr(unsafe.Pointer(&raw[0])))
	runtime.KeepAlive(data)
	if e != 0 {
		return 0, fmt.Errorf("NVME_IOCTL_ADMIN_CMD opcode %#02x on %s: %w", cmd.Opcode, s.f.Name(), e)
	}
	if r != 0 {
		return 0, &StatusError{Status: uint16(r)}
	}
	// result is the last field of the struct, written back by the kernel.
	return uint32(raw[68]) | uint32(raw[69])<<8 | uint32(raw[70])<<16 | uint32(raw[71])<<24, nil
}

// Device is an NVMe namespace block device (/dev/nvmeXnY).
type Device struct {
	S    Submitter
	NSID uint32
	// Name is the block device's kernel name (nvme0n1).
	Name string
	// SysRoot is where sysfs is found below ("" is /): a test seam.
	SysRoot string
	// Poll is how often a sanitize's progress is read (default 1 s).
	Poll time.Duration
	f    *os.File
}

// Open opens the namespace device and learns its namespace id.
func Open(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	id, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlID, 0)
	if e != 0 {
		f.Close()
		return nil, fmt.Errorf("NVME_IOCTL_ID on %s: %w (not an NVMe namespace)", path, e)
	}
	name := filepath.Base(path)
	if r, err := filepath.EvalSymlinks(path); err == nil {
		name = filepath.Base(r)
	}
	return &Device{S: ioctlSubmitter{f}, NSID: uint32(id), Name: name, f: f}, nil
}

// Close releases the device.
func (d *Device) Close() error {
	if d.f == nil {
		return nil
	}
	return d.f.Close()
}

// IdentifyController reads and parses Identify Controller.
func (d *Device) IdentifyController() (Controller, error) {
	buf := make([]byte, IdentifyDataSize)
	cmd := IdentifyController()
	if _, err := d.S.Submit(&cmd, buf); err != nil {
		return Controller{}, fmt.Errorf("identify controller: %w", err)
	}
	return ParseIdentifyController(buf)
}

// IdentifyNamespace reads and parses Identify Namespace of d.NSID.
func (d *Device) IdentifyNamespace() (Namespace, error) {
	buf := make([]byte, IdentifyDataSize)
	cmd := IdentifyNamespace(d.NSID)
	if _, err := d.S.Submit(&cmd, buf); err != nil {
		return Namespace{}, fmt.Errorf("identify namespace %d: %w", d.NSID, err)
	}
	return ParseIdentifyNamespace(buf)
}

// ActiveNamespaces reads the controller's active namespace list
// (Identify CNS 02h), following it past 1024 entries.
func (d *Device) ActiveNamespaces() ([]uint32, error) {
	var all []uint32
	after := uint32(0)
	for {
		buf := make([]byte, IdentifyDataSize)
		cmd := IdentifyActiveNamespaces(after)
		if _, err := d.S.Submit(&cmd, buf); err != nil {
			return nil, fmt.Errorf("identify active namespace list after nsid %d: %w", after, err)
		}
		ids, full, err := ParseNamespaceList(buf)
		if err != nil {
			return nil, err
		}
		if len(all) > 0 && len(ids) > 0 && ids[0] <= all[len(all)-1] {
			return nil, fmt.Errorf("identify active namespace list after nsid %d: starts at nsid %d", after, ids[0])
		}
		all = append(all, ids...)
		if !full {
			return all, nil
		}
		after = ids[len(ids)-1]
	}
}

// Judge tells, for a namespace block device (/dev/nvme0n2), whether the
// erase in progress selected it and whether it is protected.
type Judge func(path string) (selected, protected bool, err error)

// Peers lists every namespace of the device's NVM subsystem: the block
// devices sysfs shows under the subsystem and its controllers, judged by
// judge, and the controller's active NSIDs without a block device (never
// selected).
func (d *Device) Peers(judge Judge) ([]Peer, error) {
	known, err := subsystemNamespaces(d.SysRoot, d.Name)
	if err != nil {
		return nil, err
	}
	for i := range known {
		sel, prot, err := judge(known[i].Path)
		if err != nil {
			return nil, fmt.Errorf("namespace %s of the subsystem of %s: %w", known[i].Path, d.Name, err)
		}
		known[i].Selected, known[i].Protected = sel, prot
	}
	active, err := d.ActiveNamespaces()
	if err != nil {
		return nil, err
	}
	return MergePeers(known, active), nil
}

// PlanFor identifies the controller and namespace, lists the subsystem's
// namespaces and chooses the erase (DecideErase): a subsystem-wide one only
// when judge says every namespace is selected and none protected.
func (d *Device) PlanFor(judge Judge) (Plan, error) {
	c, err := d.IdentifyController()
	if err != nil {
		return Plan{}, err
	}
	ns, err := d.IdentifyNamespace()
	if err != nil {
		return Plan{}, err
	}
	peers, err := d.Peers(judge)
	if err != nil {
		return Plan{}, err
	}
	return DecideErase(c, ns, d.NSID, peers)
}

// Plan is PlanFor with only this namespace selected: a subsystem-wide
// erase runs only when it is the subsystem's single namespace.
func (d *Device) Plan() (Plan, error) {
	self := "/dev/" + d.Name
	return d.PlanFor(func(path string) (bool, bool, error) { return path == self, false, nil })
}

// formatTimeout bounds a Format NVM (a crypto or user-data erase of a large
// drive can take minutes).
const formatTimeout = time.Hour

// Erase runs the plan. A format returns when the command completes; a
// sanitize runs in the background on the controller, so its status log is
// polled until it completes or fails, reporting SPROG as progress.
func (d *Device) Erase(ctx context.Context, p Plan, progress func(done, total uint64)) error {
	cmd := p.Command
	if cmd.Opcode == OpFormatNVM {
		cmd.TimeoutMS = uint32(formatTimeout / time.Millisecond)
	}
	if _, err := d.S.Submit(&cmd, nil); err != nil {
		return fmt.Errorf("%s: %w", p.Method, err)
	}
	if cmd.Opcode != OpSanitize {
		if progress != nil {
			progress(1, 1)
		}
		return nil
	}
	poll := d.Poll
	if poll <= 0 {
		poll = time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		buf := make([]byte, SanitizeStatusSize)
		lc := SanitizeStatusLog()
		if _, err := d.S.Submit(&lc, buf); err != nil {
			return fmt.Errorf("%s: read sanitize status: %w", p.Method, err)
		}
		st, err := ParseSanitizeStatus(buf)
		if err != nil {
			return err
		}
		switch st.State {
		case SanitizeCompleted, SanitizeCompletedNoDealloc:
			if progress != nil {
				progress(65536, 65536)
			}
			return nil
		case SanitizeFailed:
			return fmt.Errorf("%s: the controller reports the sanitize failed", p.Method)
		case SanitizeInProgress:
			if progress != nil {
				progress(uint64(st.Progress), 65536)
			}
		default:
			return fmt.Errorf("%s: unexpected sanitize state %d after the command", p.Method, st.State)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (the sanitize continues on the controller)", p.Method, ctx.Err())
		case <-t.C:
		}
	}
}
