package ata

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sgIOHdr is struct sg_io_hdr (include/scsi/sg.h) on 64-bit Linux.
type sgIOHdr struct {
	interfaceID    int32
	dxferDirection int32
	cmdLen         uint8
	mxSbLen        uint8
	iovecCount     uint16
	dxferLen       uint32
	dxferp         uintptr
	cmdp           uintptr
	sbp            uintptr
	timeout        uint32
	flags          uint32
	packID         int32
	_              [4]byte
	usrPtr         uintptr
	status         uint8
	maskedStatus   uint8
	msgStatus      uint8
	sbLenWr        uint8
	hostStatus     uint16
	driverStatus   uint16
	resid          int32
	duration       uint32
	info           uint32
}

const (
	sgIO           = 0x2285
	sgDxferNone    = -1
	sgDxferToDev   = -2
	sgDxferFromDev = -3
	// senseLen is the sense buffer offered (SCSI_SENSE_BUFFERSIZE is 96).
	senseLen = 96
)

// SGIO executes commands on a SCSI generic or block device (/dev/sdX).
type SGIO struct{ F *os.File }

// OpenSGIO opens a disk for SG_IO.
func OpenSGIO(path string) (*SGIO, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &SGIO{F: f}, nil
}

// Close releases the device.
func (s *SGIO) Close() error { return s.F.Close() }

// Exec implements Transport: it returns the SCSI, host and driver status,
// the residual count and the sense data as the kernel wrote them; Check
// judges them.
func (s *SGIO) Exec(ctx context.Context, cdb CDB, dir Direction, data []byte, timeout time.Duration) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, err
	}
	// The header holds the buffers' addresses as integers, so the buffers
	// are pinned for the call.
	var pin runtime.Pinner
	defer pin.Unpin()
	cmd := new(CDB)
	*cmd = cdb
	sense := make([]byte, senseLen)
	pin.Pin(cmd)
	pin.Pin(&sense[0])
	// sg_io_hdr's timeout is 32-bit milliseconds (about 49 days): a longer
	// one (an erase time estimate near its maximum) is clamped, not wrapped.
	ms := min(timeout/time.Millisecond, math.MaxUint32)
	h := sgIOHdr{interfaceID: 'S', cmdLen: 16, mxSbLen: uint8(len(sense)), timeout: uint32(ms)}
	h.cmdp = uintptr(unsafe.Pointer(cmd))
	h.sbp = uintptr(unsafe.Pointer(&sense[0]))
	switch dir {
	case NoData:
		h.dxferDirection = sgDxferNone
	case ToDevice:
		h.dxferDirection = sgDxferToDev
	case FromDevice:
		h.dxferDirection = sgDxferFromDev
	}
	if len(data) > 0 {
		pin.Pin(&data[0])
		h.dxferLen = uint32(len(data))
		h.dxferp = uintptr(unsafe.Pointer(&data[0]))
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, s.F.Fd(), sgIO, uintptr(unsafe.Pointer(&h)))
	if e != 0 {
		return Reply{}, fmt.Errorf("SG_IO on %s: %w", s.F.Name(), e)
	}
	return Reply{
		Status: h.status, Host: h.hostStatus, Driver: h.driverStatus, Resid: h.resid,
		Sense: sense[:min(int(h.sbLenWr), len(sense))],
	}, nil
}
