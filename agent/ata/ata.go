// Package ata erases SATA drives with the ATA Security feature set (ACS-4
// §4.18: SECURITY SET PASSWORD F1h, SECURITY UNLOCK F2h, SECURITY ERASE
// PREPARE F3h, SECURITY ERASE UNIT F4h, SECURITY DISABLE PASSWORD F6h;
// IDENTIFY DEVICE ECh), tunnelled through SCSI as ATA PASS-THROUGH(16)
// (SAT-4 §12.2.2) over Linux's SG_IO, with CK_COND set so that every
// command returns the ATA registers, decoded from fixed- or
// descriptor-format sense data (sense.go). A reply without them, or with
// ERR or DF in the ATA status, or a failing SCSI, host or driver status,
// is an error.
//
// Password policy: the erase sets a user password that is always
// recoverable, never a random one nobody keeps. It is the password the
// controller sends for the machine (Wipe.ata_password) or, when none is
// sent, DefaultPassword ("anvil-erase"). A drive found with security
// enabled or locked (an erase interrupted by a power loss leaves it so)
// is recovered first: SECURITY UNLOCK (when locked) and SECURITY DISABLE
// PASSWORD with each known password in turn; Disk.Unlock does only that.
// A drive no known password opens fails with ErrUnknownPassword. The
// password is never logged nor put in a message; Password's fmt and slog
// forms are redacted.
//
// This file is the pure core: command descriptor blocks, password blocks,
// IDENTIFY DEVICE parsing and the decision what to do; disk.go drives the
// sequence through a Transport and sgio_linux.go talks to the device.
package ata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// ATA commands (ACS-4 Table 206).
const (
	CmdIdentifyDevice          uint8 = 0xec
	CmdSecuritySetPassword     uint8 = 0xf1
	CmdSecurityUnlock          uint8 = 0xf2
	CmdSecurityErasePrepare    uint8 = 0xf3
	CmdSecurityEraseUnit       uint8 = 0xf4
	CmdSecurityDisablePassword uint8 = 0xf6
)

// Protocol is the PROTOCOL field of ATA PASS-THROUGH (SAT-4 Table 163).
type Protocol uint8

// Protocols used here.
const (
	NonData    Protocol = 3
	PIODataIn  Protocol = 4
	PIODataOut Protocol = 5
)

// Direction of a command's data.
type Direction int

// Directions.
const (
	NoData Direction = iota
	FromDevice
	ToDevice
)

// CDB is a 16-byte SCSI command descriptor block.
type CDB [16]byte

// OpPassThrough16 is the ATA PASS-THROUGH(16) operation code.
const OpPassThrough16 = 0x85

// PassThrough16 builds ATA PASS-THROUGH(16) (SAT-4 Table 162) for a 28-bit
// command transferring count 512-byte blocks:
//
//	byte 1: PROTOCOL bits 4:1, EXTEND bit 0 (0: 28-bit command)
//	byte 2: OFF_LINE 7:6 = 0, CK_COND bit 5, T_TYPE bit 4 = 0 (512-byte
//	        blocks), T_DIR bit 3 (1: from the device), BYTE_BLOCK bit 2 = 1,
//	        T_LENGTH 1:0 = 2 (length in the COUNT field) or 0 (no data)
//	bytes 3-4 FEATURES, 5-6 COUNT, 7-12 LBA, 13 DEVICE, 14 COMMAND.
func PassThrough16(p Protocol, dir Direction, count uint8, command uint8) CDB {
	var c CDB
	c[0] = OpPassThrough16
	c[1] = uint8(p) << 1
	flags := uint8(1 << 5) // CK_COND: return the ATA registers
	switch dir {
	case FromDevice:
		flags |= 1<<3 | 1<<2 | 2
	case ToDevice:
		flags |= 1<<2 | 2
	}
	c[2] = flags
	c[6] = count
	c[13] = 0x40 // DEVICE: LBA mode
	c[14] = command
	return c
}

// IdentifyDevice reads the 512-byte IDENTIFY DEVICE data.
func IdentifyDevice() CDB { return PassThrough16(PIODataIn, FromDevice, 1, CmdIdentifyDevice) }

// SecuritySetPassword sends a PasswordBlock.
func SecuritySetPassword() CDB {
	return PassThrough16(PIODataOut, ToDevice, 1, CmdSecuritySetPassword)
}

// SecurityUnlock sends a PasswordBlock.
func SecurityUnlock() CDB { return PassThrough16(PIODataOut, ToDevice, 1, CmdSecurityUnlock) }

// SecurityErasePrepare must immediately precede SECURITY ERASE UNIT.
func SecurityErasePrepare() CDB { return PassThrough16(NonData, NoData, 0, CmdSecurityErasePrepare) }

// SecurityEraseUnit sends a PasswordBlock with the erase mode.
func SecurityEraseUnit() CDB { return PassThrough16(PIODataOut, ToDevice, 1, CmdSecurityEraseUnit) }

// SecurityDisablePassword sends a PasswordBlock.
func SecurityDisablePassword() CDB {
	return PassThrough16(PIODataOut, ToDevice, 1, CmdSecurityDisablePassword)
}

// Password is the 32-byte ATA password (words 1-16 of the password
// block). Printed with any fmt verb or logged with slog it reads
// "[redacted]".
type Password [32]byte

const redacted = "[redacted]"

// Format implements fmt.Formatter: a password never reaches a log by
// accident.
func (Password) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (Password) LogValue() slog.Value { return slog.StringValue(redacted) }

// DefaultPassword is the user password of an erase whose instruction
// carries none (Wipe.ata_password empty). It is public on purpose: a drive
// an interrupted erase left locked can always be opened with it.
const DefaultPassword = "anvil-erase"

// ErrNoPassword is an erase asked for without a password policy.
var ErrNoPassword = errors.New("ata: no erase password (build the policy with KnownPasswords)")

// ErrPasswordTooLong is a password over the 32 bytes of the field.
var ErrPasswordTooLong = errors.New("ata: password longer than 32 bytes")

// ParsePassword turns a text password into the 32-byte field, padded with
// zero bytes (as hdparm does); longer than 32 bytes is an error, never
// silently cut. Empty means DefaultPassword.
func ParsePassword(s string) (Password, error) {
	if s == "" {
		s = DefaultPassword
	}
	var pw Password
	if len(s) > len(pw) {
		return Password{}, fmt.Errorf("%w (%d bytes)", ErrPasswordTooLong, len(s))
	}
	copy(pw[:], s)
	return pw, nil
}

// Known is the password policy of one erase: the password it sets, and
// the passwords tried on a drive an earlier erase left with security
// enabled: the erase password first, then DefaultPassword.
type Known struct {
	// Erase is the password a new erase sets: Wipe.ata_password, else
	// DefaultPassword. A zero Erase is refused (use KnownPasswords).
	Erase Password
}

// KnownPasswords builds the policy from Wipe.ata_password (may be empty).
func KnownPasswords(instruction string) (Known, error) {
	pw, err := ParsePassword(instruction)
	if err != nil {
		return Known{}, fmt.Errorf("Wipe.ata_password: %w", err)
	}
	return Known{Erase: pw}, nil
}

// defaultPassword is DefaultPassword as the 32-byte field.
func defaultPassword() Password {
	var pw Password
	copy(pw[:], DefaultPassword)
	return pw
}

// FromInstruction says the erase password is not the default one (it
// came from Wipe.ata_password).
func (k Known) FromInstruction() bool { return k.Erase != defaultPassword() }

// Candidate is one password to try, with a name that may be logged.
type Candidate struct {
	Name string
	PW   Password
}

// Candidates are the passwords to try on a drive left with security
// enabled, the erase password first.
func (k Known) Candidates() []Candidate {
	def := Candidate{"the default password " + strconv.Quote(DefaultPassword), defaultPassword()}
	if !k.FromInstruction() {
		return []Candidate{def}
	}
	return []Candidate{{"the controller's password for this machine (Wipe.ata_password)", k.Erase}, def}
}

// Describe names the erase password for result messages, without it.
func (k Known) Describe() string {
	if k.FromInstruction() {
		return "user password: the controller's for this machine (Wipe.ata_password)"
	}
	return "user password: the default " + strconv.Quote(DefaultPassword)
}

// PasswordBlock is the data of the security commands (ACS-4 Table 248 for
// SECURITY SET PASSWORD, Table 246 for SECURITY ERASE UNIT; SECURITY
// UNLOCK and SECURITY DISABLE PASSWORD use the same words): word 0 bit 0
// is the identifier (0 user, 1 master password), bit 1 the enhanced erase
// (ERASE UNIT only); words 1-16 hold the password. (SET PASSWORD's bit 8,
// the security level for a user password, stays 0: High.)
func PasswordBlock(master, enhanced bool, pw Password) [512]byte {
	var b [512]byte
	if master {
		b[0] |= 1
	}
	if enhanced {
		b[0] |= 2
	}
	copy(b[2:34], pw[:])
	return b
}

// Identify is what the agent uses of IDENTIFY DEVICE (ACS-4 Table 45).
type Identify struct {
	Serial, Firmware, Model string
	// Sectors is the 48-bit addressable capacity (words 103:100).
	Sectors uint64
	// LogicalSectorSize in bytes (word 106, words 118:117).
	LogicalSectorSize uint32
	Security          Security
	// EraseTime and EnhancedEraseTime are the drive's estimates (words
	// 89 and 90); 0 when not reported.
	EraseTime, EnhancedEraseTime time.Duration
	Sanitize                     SanitizeSupport
}

// Security is IDENTIFY word 128 (ACS-4 Table 45, "Security status").
type Security struct {
	Supported, Enabled, Locked, Frozen, CountExpired, EnhancedErase bool
	// MasterMaximum is the master password capability (bit 8).
	MasterMaximum bool
}

// SanitizeSupport is IDENTIFY word 59 bits 12-15.
type SanitizeSupport struct {
	Supported, CryptoScramble, Overwrite, BlockErase bool
}

// Errors.
var (
	ErrShort               = errors.New("ata: IDENTIFY data shorter than 512 bytes")
	ErrChecksum            = errors.New("ata: IDENTIFY integrity word checksum mismatch")
	ErrSecurityUnsupported = errors.New("ata: the drive does not support the security feature set")
	ErrFrozen              = errors.New("ata: security is frozen (the firmware issued SECURITY FREEZE LOCK; a suspend/resume or power cycle unfreezes)")
	// ErrCountExpired is IDENTIFY word 128 bit 4: five wrong passwords
	// were tried; SECURITY UNLOCK and SECURITY ERASE UNIT are aborted until
	// a power cycle (or hard reset).
	ErrCountExpired = errors.New("ata: the password attempt counter is exhausted (IDENTIFY word 128 bit 4): power-cycle the machine before another attempt")
	// ErrUnknownPassword is a drive with security enabled that none of the
	// known passwords opens.
	ErrUnknownPassword = errors.New("ata: the drive's security is enabled with an unknown password")
)

func atastring(b []byte) string {
	s := make([]byte, len(b))
	for i := 0; i+1 < len(b); i += 2 {
		s[i], s[i+1] = b[i+1], b[i]
	}
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(s)))
}

// eraseTime decodes words 89/90: bit 15 set means bits 14:0 give the time
// in 2-minute units; otherwise bits 7:0 do. 0 means not reported.
func eraseTime(w uint16) time.Duration {
	units := w & 0xff
	if w&0x8000 != 0 {
		units = w & 0x7fff
	}
	return time.Duration(units) * 2 * time.Minute
}

// ParseIdentify parses 512 bytes of IDENTIFY DEVICE data.
func ParseIdentify(b []byte) (Identify, error) {
	if len(b) < 512 {
		return Identify{}, ErrShort
	}
	b = b[:512]
	w := func(i int) uint16 { return binary.LittleEndian.Uint16(b[2*i:]) }
	if w(255)&0xff == 0xa5 { // integrity word: signature A5h, checksum in 15:8
		var sum uint8
		for _, c := range b {
			sum += c
		}
		if sum != 0 {
			return Identify{}, fmt.Errorf("%w (sum %#02x)", ErrChecksum, sum)
		}
	}
	id := Identify{
		Serial:            atastring(b[20:40]),
		Firmware:          atastring(b[46:54]),
		Model:             atastring(b[54:94]),
		Sectors:           uint64(w(100)) | uint64(w(101))<<16 | uint64(w(102))<<32 | uint64(w(103))<<48,
		LogicalSectorSize: 512,
		EraseTime:         eraseTime(w(89)),
		EnhancedEraseTime: eraseTime(w(90)),
	}
	if w106 := w(106); w106&0xc000 == 0x4000 && w106&(1<<12) != 0 {
		id.LogicalSectorSize = 2 * (uint32(w(117)) | uint32(w(118))<<16)
	}
	s := w(128)
	id.Security = Security{
		Supported: s&1 != 0, Enabled: s&2 != 0, Locked: s&4 != 0, Frozen: s&8 != 0,
		CountExpired: s&16 != 0, EnhancedErase: s&32 != 0, MasterMaximum: s&0x100 != 0,
	}
	// Word 82 bit 1 also announces the feature set; trust either.
	id.Security.Supported = id.Security.Supported || w(82)&2 != 0
	s59 := w(59)
	id.Sanitize = SanitizeSupport{Supported: s59&(1<<12) != 0, CryptoScramble: s59&(1<<13) != 0, Overwrite: s59&(1<<14) != 0, BlockErase: s59&(1<<15) != 0}
	return id, nil
}

// Recovery is how a password left on a drive is removed before anything
// else (ACS-4 §4.18.11 security states: SEC1 disabled, SEC4 locked, SEC5
// enabled and unlocked).
type Recovery int

// Recoveries.
const (
	// RecoverNone: security is disabled (SEC1), nothing to remove.
	RecoverNone Recovery = iota
	// RecoverUnlock: the drive is locked (SEC4): SECURITY UNLOCK with each
	// known password until one is accepted, then SECURITY DISABLE
	// PASSWORD with it.
	RecoverUnlock
	// RecoverDisable: security is enabled but the drive unlocked (SEC5):
	// SECURITY DISABLE PASSWORD with each known password until one is
	// accepted.
	RecoverDisable
)

func (r Recovery) String() string {
	return [...]string{"none", "unlock+disable", "disable"}[r]
}

// PlanRecovery decides how a drive in security state s is brought back
// to security disabled (SEC1).
func PlanRecovery(s Security) (Recovery, error) {
	switch {
	case !s.Supported:
		return RecoverNone, ErrSecurityUnsupported
	case s.Frozen:
		return RecoverNone, ErrFrozen
	case s.Locked && s.CountExpired:
		return RecoverNone, ErrCountExpired
	case s.Locked:
		return RecoverUnlock, nil
	case s.Enabled:
		return RecoverDisable, nil
	}
	return RecoverNone, nil
}

// Steps is the security erase Plan chose.
type Steps struct {
	// Recover removes a password an earlier erase left.
	Recover  Recovery
	Enhanced bool
	// Timeout for SECURITY ERASE UNIT.
	Timeout time.Duration
}

// DefaultEraseTimeout is used when the drive gives no estimate.
const DefaultEraseTimeout = 8 * time.Hour

// Plan decides whether and how the drive can be security-erased: the
// recovery first, then SECURITY SET PASSWORD, ERASE PREPARE and ERASE
// UNIT. An exhausted attempt counter also stops ERASE UNIT, so it fails
// the plan even on a drive that is not locked.
func Plan(id Identify) (Steps, error) {
	s := id.Security
	rec, err := PlanRecovery(s)
	if err != nil {
		return Steps{}, err
	}
	if s.CountExpired {
		return Steps{}, ErrCountExpired
	}
	st := Steps{Recover: rec, Enhanced: s.EnhancedErase, Timeout: DefaultEraseTimeout}
	est := id.EraseTime
	if st.Enhanced {
		est = id.EnhancedEraseTime
	}
	if est > 0 {
		st.Timeout = est*3/2 + 10*time.Minute
	}
	return st, nil
}
