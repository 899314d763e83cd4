// Package nvme builds and parses the NVMe admin commands the agent needs to
// erase NVMe drives, as defined by the NVMe Base Specification 2.0:
// Identify (opcode 06h, CNS 00h namespace / 01h controller / 02h active
// namespace list), Sanitize (84h), Format NVM (80h) and Get Log Page (02h)
// for the Sanitize Status log (81h), and decides which erase may run:
// a sanitize, or a Format NVM whose FNA (Identify Controller byte 524)
// makes it reach every namespace, destroys the whole NVM subsystem, so it
// runs only when every namespace is selected and none protected
// (DecideErase). Commands travel through Linux's NVME_IOCTL_ADMIN_CMD as a
// struct nvme_passthru_cmd (include/uapi/linux/nvme_ioctl.h). nvme.go and
// scope.go are the pure core; nvme_linux.go submits the commands and reads
// the subsystem's namespaces from sysfs.
package nvme

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Admin opcodes (NVMe 2.0, Fig. 28).
const (
	OpGetLogPage uint8 = 0x02
	OpIdentify   uint8 = 0x06
	OpFormatNVM  uint8 = 0x80
	OpSanitize   uint8 = 0x84
)

// LogSanitizeStatus is the Sanitize Status log page identifier.
const LogSanitizeStatus uint8 = 0x81

// Command is struct nvme_passthru_cmd.
type Command struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2, CDW3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMS   uint32
	Result      uint32
}

// CommandSize is sizeof(struct nvme_passthru_cmd).
const CommandSize = 72

// Marshal returns the kernel's little-endian layout.
func (c *Command) Marshal() [CommandSize]byte {
	var b [CommandSize]byte
	le := binary.LittleEndian
	b[0], b[1] = c.Opcode, c.Flags
	le.PutUint16(b[2:], c.Rsvd1)
	le.PutUint32(b[4:], c.NSID)
	le.PutUint32(b[8:], c.CDW2)
	le.PutUint32(b[12:], c.CDW3)
	le.PutUint64(b[16:], c.Metadata)
	le.PutUint64(b[24:], c.Addr)
	le.PutUint32(b[32:], c.MetadataLen)
	le.PutUint32(b[36:], c.DataLen)
	for i, v := range []uint32{c.CDW10, c.CDW11, c.CDW12, c.CDW13, c.CDW14, c.CDW15, c.TimeoutMS, c.Result} {
		le.PutUint32(b[40+4*i:], v)
	}
	return b
}

// IdentifyDataSize is the size of every Identify data structure.
const IdentifyDataSize = 4096

// IdentifyController is Identify with CNS 01h (NVMe 2.0 Fig. 273).
func IdentifyController() Command {
	return Command{Opcode: OpIdentify, DataLen: IdentifyDataSize, CDW10: 0x01}
}

// IdentifyNamespace is Identify with CNS 00h for nsid.
func IdentifyNamespace(nsid uint32) Command {
	return Command{Opcode: OpIdentify, NSID: nsid, DataLen: IdentifyDataSize, CDW10: 0x00}
}

// SanitizeAction is CDW10 SANACT (NVMe 2.0 Fig. 372).
type SanitizeAction uint8

// Sanitize actions.
const (
	SanitizeExitFailure SanitizeAction = 1
	SanitizeBlockErase  SanitizeAction = 2
	SanitizeOverwrite   SanitizeAction = 3
	SanitizeCryptoErase SanitizeAction = 4
)

// Sanitize builds a Sanitize command: SANACT in CDW10 bits 2:0, AUSE
// (allow unrestricted sanitize exit) bit 3, NDAS (no deallocate after
// sanitize) bit 9.
func Sanitize(action SanitizeAction, noDeallocate bool) Command {
	cdw10 := uint32(action&7) | 1<<3
	if noDeallocate {
		cdw10 |= 1 << 9
	}
	return Command{Opcode: OpSanitize, CDW10: cdw10}
}

// Secure erase settings of Format NVM (CDW10 SES, bits 11:9).
const (
	SESNone        uint8 = 0
	SESUserData    uint8 = 1
	SESCryptoErase uint8 = 2
)

// FormatNVM builds Format NVM for nsid keeping LBA format lbaf: LBAF lower
// bits 3:0 and upper bits 13:12 (NVMe 2.0 Fig. 320), SES bits 11:9, no
// metadata settings or protection information.
func FormatNVM(nsid uint32, lbaf uint8, ses uint8) Command {
	cdw10 := uint32(lbaf&0x0f) | uint32(lbaf>>4&0x03)<<12 | uint32(ses&0x07)<<9
	return Command{Opcode: OpFormatNVM, NSID: nsid, CDW10: cdw10}
}

// GetLogPage reads n bytes (a multiple of 4) of log lid: LID in CDW10 bits
// 7:0, the 0-based dword count NUMD split into NUMDL (CDW10 bits 31:16)
// and NUMDU (CDW11 bits 15:0) (NVMe 2.0 Fig. 197).
func GetLogPage(lid uint8, nsid uint32, n int) Command {
	numd := uint32(n/4 - 1)
	return Command{Opcode: OpGetLogPage, NSID: nsid, DataLen: uint32(n),
		CDW10: uint32(lid) | (numd&0xffff)<<16, CDW11: numd >> 16}
}

// SanitizeStatusSize is the size of the Sanitize Status log read.
const SanitizeStatusSize = 512

// SanitizeStatusLog reads the Sanitize Status log page (global: NSID all Fs).
func SanitizeStatusLog() Command {
	return GetLogPage(LogSanitizeStatus, 0xffffffff, SanitizeStatusSize)
}

// Controller is what the agent uses of Identify Controller (Fig. 275).
type Controller struct {
	Serial, Model, Firmware string
	// OACS is Optional Admin Command Support (bytes 257:256).
	OACS uint16
	// FNA is Format NVM Attributes (byte 524).
	FNA uint8
	// SANICAP is Sanitize Capabilities (bytes 331:328).
	SANICAP uint32
}

// FormatSupported is OACS bit 1.
func (c Controller) FormatSupported() bool { return c.OACS&(1<<1) != 0 }

// CryptoFormat is FNA bit 2: cryptographic erase supported by Format NVM.
func (c Controller) CryptoFormat() bool { return c.FNA&(1<<2) != 0 }

// FormatAllNamespaces is FNA bit 0 (format applies to all namespaces).
func (c Controller) FormatAllNamespaces() bool { return c.FNA&1 != 0 }

// SanitizeCrypto is SANICAP bit 0 (CES); SanitizeBlock bit 1 (BES);
// SanitizeOverwrite bit 2 (OWS).
func (c Controller) SanitizeCrypto() bool    { return c.SANICAP&1 != 0 }
func (c Controller) SanitizeBlock() bool     { return c.SANICAP&2 != 0 }
func (c Controller) SanitizeOverwrite() bool { return c.SANICAP&4 != 0 }

// ErrShort is a data structure shorter than its definition.
var ErrShort = errors.New("nvme: data structure too short")

func ascii(b []byte) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(b)))
}

// ParseIdentifyController parses the 4096-byte Identify Controller data.
func ParseIdentifyController(b []byte) (Controller, error) {
	if len(b) < IdentifyDataSize {
		return Controller{}, fmt.Errorf("%w: identify controller is %d bytes, want %d", ErrShort, len(b), IdentifyDataSize)
	}
	le := binary.LittleEndian
	return Controller{
		Serial:   ascii(b[4:24]),
		Model:    ascii(b[24:64]),
		Firmware: ascii(b[64:72]),
		OACS:     le.Uint16(b[256:258]),
		SANICAP:  le.Uint32(b[328:332]),
		FNA:      b[524],
	}, nil
}

// LBAFormat is one LBA Format Data Structure (Fig. 280).
type LBAFormat struct {
	// MetadataSize in bytes (MS, bits 15:0).
	MetadataSize uint16
	// DataSizeShift is LBADS: the LBA data size is 1<<LBADS (bits 23:16).
	DataSizeShift uint8
	// RelativePerformance (RP, bits 25:24).
	RelativePerformance uint8
}

// Namespace is what the agent uses of Identify Namespace (Fig. 276).
type Namespace struct {
	// Size in logical blocks (NSZE, bytes 7:0).
	Size uint64
	// Formats are the NLBAF+1 supported LBA formats (byte 25 is 0-based).
	Formats []LBAFormat
	// FLBAS is Formatted LBA Size (byte 26).
	FLBAS uint8
}

// CurrentFormat is the index of the LBA format in use: FLBAS bits 3:0,
// with bits 6:5 as the upper two bits when more than 16 formats exist.
func (n Namespace) CurrentFormat() uint8 {
	return n.FLBAS&0x0f | (n.FLBAS>>5&0x03)<<4
}

// ParseIdentifyNamespace parses the 4096-byte Identify Namespace data.
func ParseIdentifyNamespace(b []byte) (Namespace, error) {
	if len(b) < IdentifyDataSize {
		return Namespace{}, fmt.Errorf("%w: identify namespace is %d bytes, want %d", ErrShort, len(b), IdentifyDataSize)
	}
	le := binary.LittleEndian
	n := Namespace{Size: le.Uint64(b[0:8]), FLBAS: b[26]}
	count := int(b[25]) + 1
	for i := range count {
		v := le.Uint32(b[128+4*i:])
		n.Formats = append(n.Formats, LBAFormat{MetadataSize: uint16(v), DataSizeShift: uint8(v >> 16), RelativePerformance: uint8(v>>24) & 3})
	}
	if int(n.CurrentFormat()) >= count {
		return n, fmt.Errorf("nvme: FLBAS selects LBA format %d of %d", n.CurrentFormat(), count)
	}
	return n, nil
}

// SanitizeState is SSTAT bits 2:0 of the Sanitize Status log (Fig. 267).
type SanitizeState uint8

// Sanitize states.
const (
	SanitizeNever              SanitizeState = 0
	SanitizeCompleted          SanitizeState = 1
	SanitizeInProgress         SanitizeState = 2
	SanitizeFailed             SanitizeState = 3
	SanitizeCompletedNoDealloc SanitizeState = 4
)

// SanitizeStatus is the Sanitize Status log page.
type SanitizeStatus struct {
	// Progress is SPROG/65536 of the sanitize in progress (bytes 1:0).
	Progress uint16
	State    SanitizeState
	// GlobalDataErased is SSTAT bit 8.
	GlobalDataErased bool
	// CDW10 of the last Sanitize command (SCDW10, bytes 7:4).
	CDW10 uint32
	// Estimated seconds for overwrite, block erase and crypto erase
	// (bytes 11:8, 15:12, 19:16; all Fs = no estimate).
	EstOverwrite, EstBlockErase, EstCryptoErase uint32
}

// ParseSanitizeStatus parses the Sanitize Status log page.
func ParseSanitizeStatus(b []byte) (SanitizeStatus, error) {
	if len(b) < 20 {
		return SanitizeStatus{}, fmt.Errorf("%w: sanitize status log is %d bytes, want at least 20", ErrShort, len(b))
	}
	le := binary.LittleEndian
	sstat := le.Uint16(b[2:4])
	return SanitizeStatus{
		Progress:         le.Uint16(b[0:2]),
		State:            SanitizeState(sstat & 7),
		GlobalDataErased: sstat&(1<<8) != 0,
		CDW10:            le.Uint32(b[4:8]),
		EstOverwrite:     le.Uint32(b[8:12]),
		EstBlockErase:    le.Uint32(b[12:16]),
		EstCryptoErase:   le.Uint32(b[16:20]),
	}, nil
}

// ErrNoHardwareErase is a controller without sanitize or Format NVM.
var ErrNoHardwareErase = errors.New("nvme: the controller supports neither sanitize nor Format NVM")

// Plan is the erase DecideErase picked.
type Plan struct {
	Method  string
	Crypto  bool
	Command Command
	// Scope is what the command erases: this namespace only, or every
	// namespace of the NVM subsystem (run it once per subsystem).
	Scope Scope
}

// StatusError is a command completed with a non-zero NVMe status: the
// ioctl's positive return value, SC in bits 7:0, SCT in bits 10:8, More
// bit 13, DNR bit 14.
type StatusError struct {
	Status uint16
}

// SCT and SC of the status.
func (e *StatusError) SCT() uint8 { return uint8(e.Status >> 8 & 7) }
func (e *StatusError) SC() uint8  { return uint8(e.Status) }

// Errors matched by errors.Is against a *StatusError.
var (
	ErrInvalidOpcode = errors.New("nvme: invalid command opcode")
	ErrInvalidField  = errors.New("nvme: invalid field in command")
	ErrInvalidFormat = errors.New("nvme: invalid format")
)

func (e *StatusError) Error() string {
	name := "unknown status"
	switch {
	case e.SCT() == 0 && e.SC() == 0x01:
		name = "invalid command opcode"
	case e.SCT() == 0 && e.SC() == 0x02:
		name = "invalid field in command"
	case e.SCT() == 0 && e.SC() == 0x1d:
		name = "sanitize in progress"
	case e.SCT() == 0 && e.SC() == 0x1c:
		name = "sanitize failed"
	case e.SCT() == 1 && e.SC() == 0x0a:
		name = "invalid format"
	case e.SCT() == 1 && e.SC() == 0x15:
		name = "namespace is write protected"
	}
	dnr := ""
	if e.Status&(1<<14) != 0 {
		dnr = ", do not retry"
	}
	return fmt.Sprintf("nvme status %#04x: %s (SCT %d, SC %#02x%s)", e.Status, name, e.SCT(), e.SC(), dnr)
}

// Is matches the sentinels above.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrInvalidOpcode:
		return e.SCT() == 0 && e.SC() == 0x01
	case ErrInvalidField:
		return e.SCT() == 0 && e.SC() == 0x02
	case ErrInvalidFormat:
		return e.SCT() == 1 && e.SC() == 0x0a
	}
	return false
}
