package ata

import (
	"errors"
	"fmt"
	"strings"
)

// Reply is what the SCSI layer returned for one ATA PASS-THROUGH command:
// the fields of Linux's struct sg_io_hdr that say whether and how it
// completed, and the sense data carrying the ATA registers.
type Reply struct {
	// Status is the SCSI status byte (SAM-5: 00h GOOD, 02h CHECK
	// CONDITION, 08h BUSY, 18h RESERVATION CONFLICT, 28h TASK SET FULL,
	// 40h TASK ABORTED).
	Status uint8
	// Host is sg_io_hdr.host_status (DID_* in include/scsi/scsi_status.h).
	Host uint16
	// Driver is sg_io_hdr.driver_status (DRIVER_*; 08h DRIVER_SENSE only
	// says sense data came back).
	Driver uint16
	// Resid is the number of data bytes not transferred.
	Resid int32
	Sense []byte
}

// SCSI status codes (SAM-5 Table 39) that carry a completed command.
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02
)

// driverSense is DRIVER_SENSE: sense data came back (CK_COND asks for it).
const driverSense = 0x08

// Sense formats (SPC-5 §4.4.1, RESPONSE CODE field).
const (
	FormatFixed      = "fixed"      // 70h current, 71h deferred
	FormatDescriptor = "descriptor" // 72h current, 73h deferred
)

// Registers are the ATA registers returned with CK_COND (SAT-4 §12.2.2.6
// ATA Status Return sense data descriptor; §12.2.2.7 fixed format).
type Registers struct {
	Format            string
	SenseKey, ASC     uint8
	ASCQ              uint8
	Error, Status     uint8
	Device, Count     uint8
	LBA               uint64
	Extend            bool
	CountUpperNonzero bool // fixed format only: the upper COUNT byte is not 0
	LBAUpperNonzero   bool // fixed format only: an upper LBA byte is not 0
}

// ATA status bits (ACS-4 §6.2).
const (
	StatusBSY  = 0x80
	StatusDRDY = 0x40
	StatusDF   = 0x20
	StatusDRQ  = 0x08
	StatusERR  = 0x01
)

// ATA error bits (ACS-4 §6.3).
const (
	ErrorICRC  = 0x80
	ErrorUNC   = 0x40
	ErrorIDNF  = 0x10
	ErrorABRT  = 0x04
	ErrorEOM   = 0x02
	errorNames = "ICRC UNC bit5 IDNF bit3 ABRT EOM bit0"
)

// Sense keys (SPC-5 Table 49) a successful CK_COND command may carry.
const (
	senseNoSense        = 0x0
	senseRecoveredError = 0x1
)

var senseKeyNames = [16]string{
	"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR",
	"ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC",
	"COPY ABORTED", "ABORTED COMMAND", "reserved", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED",
}

// Errors of the SCSI and ATA layers.
var (
	// ErrAborted is an ATA command ended with ABRT in the error register
	// (a wrong password, a command not allowed in the security state, or
	// not supported).
	ErrAborted = errors.New("ata: command aborted by the device")
	// ErrNoRegisters is a reply without the ATA registers that CK_COND
	// asks for: nothing says the command succeeded.
	ErrNoRegisters = errors.New("ata: no ATA status returned (CK_COND was set)")
	// ErrTransport is a failure below the ATA device: the SCSI status,
	// host or driver status, or a short transfer.
	ErrTransport = errors.New("ata: the SCSI layer reported a failure")
)

// DecodeSense reads the ATA registers from sense data in either format
// (SAT-4 §12.2.2.6, §12.2.2.7):
//
// Descriptor format (response code 72h/73h): sense key in byte 1 bits 3:0,
// ASC byte 2, ASCQ byte 3, ADDITIONAL SENSE LENGTH byte 7, descriptors from
// byte 8. The ATA Status Return descriptor has code 09h, length 0Ch, and
// bytes 2 EXTEND (bit 0), 3 ERROR, 4/5 COUNT 15:8/7:0, 6/7 LBA 31:24/7:0,
// 8/9 LBA 39:32/15:8, 10/11 LBA 47:40/23:16, 12 DEVICE, 13 STATUS.
//
// Fixed format (70h/71h, with VALID bit 7 of byte 0 set): sense key in
// byte 2 bits 3:0, ASC byte 12, ASCQ byte 13; the INFORMATION field
// (bytes 3-6) holds ERROR, STATUS, DEVICE, COUNT 7:0; the COMMAND-SPECIFIC
// INFORMATION field (bytes 8-11) holds EXTEND (bit 7), COUNT UPPER NONZERO
// (bit 6), LBA UPPER NONZERO (bit 5) in byte 8, then LBA 7:0, 15:8, 23:16.
// This is also what Linux's libata builds (ata_scsi_set_passthru_sense_fields).
//
// ok is false when the data holds no ATA registers.
func DecodeSense(sense []byte) (r Registers, ok bool) {
	if len(sense) == 0 {
		return Registers{}, false
	}
	switch sense[0] & 0x7f {
	case 0x72, 0x73:
		if len(sense) < 8 {
			return Registers{}, false
		}
		r = Registers{Format: FormatDescriptor, SenseKey: sense[1] & 0x0f, ASC: sense[2], ASCQ: sense[3]}
		end := min(len(sense), 8+int(sense[7]))
		for i := 8; i+1 < end; {
			code, n := sense[i], int(sense[i+1])
			if code == 0x09 && n >= 0x0c && i+13 < end {
				d := sense[i : i+14]
				r.Extend = d[2]&1 != 0
				r.Error, r.Device, r.Status = d[3], d[12], d[13]
				r.Count = d[5]
				r.LBA = uint64(d[7]) | uint64(d[9])<<8 | uint64(d[11])<<16
				if r.Extend {
					r.LBA |= uint64(d[6])<<24 | uint64(d[8])<<32 | uint64(d[10])<<40
				}
				return r, true
			}
			i += 2 + n
		}
		return Registers{}, false
	case 0x70, 0x71:
		if len(sense) < 14 || sense[0]&0x80 == 0 || 8+int(sense[7]) < 14 {
			return Registers{}, false
		}
		return Registers{
			Format: FormatFixed, SenseKey: sense[2] & 0x0f, ASC: sense[12], ASCQ: sense[13],
			Error: sense[3], Status: sense[4], Device: sense[5], Count: sense[6],
			Extend: sense[8]&0x80 != 0, CountUpperNonzero: sense[8]&0x40 != 0, LBAUpperNonzero: sense[8]&0x20 != 0,
			LBA: uint64(sense[9]) | uint64(sense[10])<<8 | uint64(sense[11])<<16,
		}, true
	}
	return Registers{}, false
}

// DeviceError is an ATA command the device failed (ERR or DF in the
// status), or that the SCSI layer reported with a failing sense key.
type DeviceError struct {
	Command uint8
	Regs    Registers
}

func (e *DeviceError) Error() string {
	r := e.Regs
	return fmt.Sprintf("ATA command %#02x (%s) failed: status %#02x (%s), error %#02x (%s); sense key %#x %s, ASC/ASCQ %02x/%02xh (%s sense)",
		e.Command, CommandName(e.Command), r.Status, statusBits(r.Status), r.Error, ErrorBits(r.Error),
		r.SenseKey, senseKeyNames[r.SenseKey&0x0f], r.ASC, r.ASCQ, r.Format)
}

// Is makes errors.Is(err, ErrAborted) true when ABRT is set.
func (e *DeviceError) Is(target error) bool {
	return target == ErrAborted && e.Regs.Status&(StatusERR|StatusDF) != 0 && e.Regs.Error&ErrorABRT != 0
}

// ErrorBits names the set bits of the ATA error register.
func ErrorBits(v uint8) string {
	if v == 0 {
		return "none"
	}
	names := strings.Fields(errorNames)
	var out []string
	for i := 0; i < 8; i++ {
		if v&(0x80>>i) != 0 {
			out = append(out, names[i])
		}
	}
	return strings.Join(out, " ")
}

func statusBits(v uint8) string {
	names := []string{"BSY", "DRDY", "DF", "bit4", "DRQ", "bit2", "bit1", "ERR"}
	var out []string
	for i := 0; i < 8; i++ {
		if v&(0x80>>i) != 0 {
			out = append(out, names[i])
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

// CommandName names the ATA commands this package sends.
func CommandName(c uint8) string {
	switch c {
	case CmdIdentifyDevice:
		return "IDENTIFY DEVICE"
	case CmdSecuritySetPassword:
		return "SECURITY SET PASSWORD"
	case CmdSecurityUnlock:
		return "SECURITY UNLOCK"
	case CmdSecurityErasePrepare:
		return "SECURITY ERASE PREPARE"
	case CmdSecurityEraseUnit:
		return "SECURITY ERASE UNIT"
	case CmdSecurityDisablePassword:
		return "SECURITY DISABLE PASSWORD"
	}
	return "unknown"
}

var hostNames = map[uint16]string{
	0x01: "DID_NO_CONNECT", 0x02: "DID_BUS_BUSY", 0x03: "DID_TIME_OUT", 0x04: "DID_BAD_TARGET",
	0x05: "DID_ABORT", 0x06: "DID_PARITY", 0x07: "DID_ERROR", 0x08: "DID_RESET",
	0x09: "DID_BAD_INTR", 0x0a: "DID_PASSTHROUGH", 0x0b: "DID_SOFT_ERROR", 0x0c: "DID_IMM_RETRY",
	0x0d: "DID_REQUEUE", 0x0e: "DID_TRANSPORT_DISRUPTED", 0x0f: "DID_TRANSPORT_FAILFAST",
}

var statusNames = map[uint8]string{
	0x04: "CONDITION MET", 0x08: "BUSY", 0x10: "INTERMEDIATE", 0x14: "INTERMEDIATE-CONDITION MET",
	0x18: "RESERVATION CONFLICT", 0x22: "COMMAND TERMINATED", 0x28: "TASK SET FULL",
	0x30: "ACA ACTIVE", 0x40: "TASK ABORTED",
}

// Check decides whether one ATA PASS-THROUGH command with CK_COND set
// succeeded, from everything the SCSI layer returned: the host and driver
// status must be clean, the SCSI status GOOD or CHECK CONDITION, all the
// data transferred (dataLen bytes), and the sense data must carry the ATA
// registers (either format) with a NO SENSE or RECOVERED ERROR sense key
// and neither BSY, DF nor ERR in the ATA status. Anything else is an
// error: an absent or unrecognised sense is never taken for success.
func Check(command uint8, dataLen int, r Reply) (Registers, error) {
	name := fmt.Sprintf("ATA command %#02x (%s)", command, CommandName(command))
	if r.Host != 0 {
		return Registers{}, fmt.Errorf("%w: %s: host status %#x (%s)", ErrTransport, name, r.Host, hostNames[r.Host])
	}
	if r.Driver&^driverSense != 0 {
		return Registers{}, fmt.Errorf("%w: %s: driver status %#x", ErrTransport, name, r.Driver)
	}
	if r.Status != statusGood && r.Status != statusCheckCondition {
		return Registers{}, fmt.Errorf("%w: %s: SCSI status %#02x (%s)", ErrTransport, name, r.Status, statusNames[r.Status])
	}
	regs, ok := DecodeSense(r.Sense)
	if !ok {
		return Registers{}, fmt.Errorf("%w: %s: SCSI status %#02x, sense % x", ErrNoRegisters, name, r.Status, r.Sense)
	}
	if regs.Status&(StatusBSY|StatusDF|StatusERR) != 0 || regs.SenseKey != senseNoSense && regs.SenseKey != senseRecoveredError {
		return regs, &DeviceError{Command: command, Regs: regs}
	}
	if r.Resid != 0 {
		return regs, fmt.Errorf("%w: %s: %d of %d data bytes not transferred", ErrTransport, name, r.Resid, dataLen)
	}
	return regs, nil
}
