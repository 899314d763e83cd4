package ata

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestPlanAndRecovery(t *testing.T) {
	// IDENTIFY word 128 (ACS-4 Table 45): bit 0 supported, 1 enabled,
	// 2 locked, 3 frozen, 4 count expired, 5 enhanced erase supported.
	cases := []struct {
		name    string
		sec     uint16
		rec     Recovery
		recErr  error
		planErr error
		enh     bool
	}{
		{"not supported (QEMU's drives)", 0x0000, RecoverNone, ErrSecurityUnsupported, ErrSecurityUnsupported, false},
		{"SEC1 disabled, normal erase", 0x0001, RecoverNone, nil, nil, false},
		{"SEC1 disabled, enhanced erase", 0x0021, RecoverNone, nil, nil, true},
		{"SEC2 frozen by the BIOS", 0x0009, RecoverNone, ErrFrozen, ErrFrozen, false},
		{"SEC6 enabled and frozen", 0x000b, RecoverNone, ErrFrozen, ErrFrozen, false},
		{"SEC4 locked (power lost mid-erase)", 0x0007, RecoverUnlock, nil, nil, false},
		{"SEC4 locked, enhanced", 0x0027, RecoverUnlock, nil, nil, true},
		{"SEC4 locked, attempt counter exhausted", 0x0017, RecoverNone, ErrCountExpired, ErrCountExpired, false},
		{"SEC5 enabled, unlocked (erase interrupted without a power loss)", 0x0003, RecoverDisable, nil, nil, false},
		{"SEC5 enabled, counter exhausted: DISABLE works, ERASE UNIT would not", 0x0013, RecoverDisable, nil, ErrCountExpired, false},
	}
	for _, c := range cases {
		id, err := ParseIdentify(identify(c.sec, 0x0005, 0x0002))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := PlanRecovery(id.Security)
		if !errors.Is(err, c.recErr) || err == nil && rec != c.rec {
			t.Errorf("%s: PlanRecovery = %v, %v; want %v, %v", c.name, rec, err, c.rec, c.recErr)
		}
		st, err := Plan(id)
		if !errors.Is(err, c.planErr) || c.planErr == nil && (st.Recover != c.rec || st.Enhanced != c.enh) {
			t.Errorf("%s: Plan = %+v, %v; want recover %v enhanced %v, %v", c.name, st, err, c.rec, c.enh, c.planErr)
		}
		if err == nil {
			want := 10*time.Minute + map[bool]time.Duration{false: 15 * time.Minute, true: 6 * time.Minute}[c.enh]
			if st.Timeout != want {
				t.Errorf("%s: timeout %v, want %v", c.name, st.Timeout, want)
			}
		}
	}
}

const machinePW = "m4chine-pw-from-controller-0123" // 31 bytes

func TestPasswordPolicy(t *testing.T) {
	k, err := KnownPasswords("")
	if err != nil {
		t.Fatal(err)
	}
	if want := "anvil-erase\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"; string(k.Erase[:]) != want || k.FromInstruction() {
		t.Errorf("no instruction password: %q (from instruction %v), want the default padded with zero bytes", k.Erase[:], k.FromInstruction())
	}
	if c := k.Candidates(); len(c) != 1 || c[0].PW != k.Erase {
		t.Errorf("default policy candidates: %d", len(c))
	}
	if !strings.Contains(k.Describe(), `"anvil-erase"`) {
		t.Errorf("the default is documented in the result: %q", k.Describe())
	}
	k, err = KnownPasswords(machinePW)
	if err != nil {
		t.Fatal(err)
	}
	c := k.Candidates()
	if !k.FromInstruction() || len(c) != 2 || string(c[0].PW[:len(machinePW)]) != machinePW || c[1].PW != mustPW(t, DefaultPassword) {
		t.Errorf("instruction policy: %v, %d candidates", k.FromInstruction(), len(c))
	}
	if strings.Contains(k.Describe(), machinePW) || !strings.Contains(k.Describe(), "Wipe.ata_password") {
		t.Errorf("describe: %q", k.Describe())
	}
	if _, err := KnownPasswords(strings.Repeat("x", 33)); !errors.Is(err, ErrPasswordTooLong) {
		t.Errorf("33 bytes: %v", err)
	}
	if _, err := ParsePassword(strings.Repeat("x", 32)); err != nil {
		t.Errorf("32 bytes: %v", err)
	}
	if k, err := KnownPasswords(DefaultPassword); err != nil || k.FromInstruction() || len(k.Candidates()) != 1 {
		t.Errorf("the default sent explicitly is tried once: %v", err)
	}
	if _, err := (&Disk{T: &fakeDrive{sec: 1}}).SecureErase(context.Background(), Known{}, nil); !errors.Is(err, ErrNoPassword) {
		t.Errorf("zero policy: %v", err)
	}
}

func mustPW(t *testing.T, s string) Password {
	t.Helper()
	pw, err := ParsePassword(s)
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func TestPasswordIsNeverPrinted(t *testing.T) {
	k, err := KnownPasswords(machinePW)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString(fmt.Sprintf("%v %+v %#v %s %x %q %v", k.Erase, k, k, k.Erase, k.Erase, k.Erase, k.Candidates()))
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "pw", k.Erase, "known", k.Erase)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("x", "pw", k.Erase)
	hexPW := hex.EncodeToString([]byte(machinePW))
	if s := out.String(); strings.Contains(s, machinePW) || strings.Contains(s, hexPW) || strings.Contains(s, "109 52") || !strings.Contains(s, redacted) {
		t.Errorf("a printed password: %s", s)
	}
}

// fakeDrive plays the ACS security state machine (SEC1 disabled, SEC4
// locked, SEC5 enabled and unlocked; the password attempt counter) and
// answers as Linux's libata does with CK_COND: fixed- or descriptor-format
// sense carrying the ATA registers.
type fakeDrive struct {
	sec      uint16 // IDENTIFY word 128
	pw       *Password
	attempts int // wrong passwords left before the counter expires
	fixed    bool
	failUnit bool
	staysOn  bool
	noSense  bool
	// lostSetReply: SET PASSWORD takes effect, but its answer is lost
	// (the host adapter timed out).
	lostSetReply bool
	cdbs         []CDB
	payloads     [][]byte
}

const (
	secEnabled = 0x0002
	secLocked  = 0x0004
	secExpired = 0x0010
)

func (f *fakeDrive) reply(abort bool) Reply {
	if f.noSense {
		return Reply{Status: statusGood}
	}
	var s string
	switch {
	case f.fixed && abort:
		s = fixedAbort
	case f.fixed:
		s = fixedSuccess
	case abort:
		s = descAbort
	default:
		s = descSuccess
	}
	b, _ := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	return Reply{Status: statusCheckCondition, Driver: driverSense, Sense: b}
}

func (f *fakeDrive) mismatch(blk []byte) bool {
	var pw Password
	copy(pw[:], blk[2:34])
	if f.pw != nil && pw == *f.pw {
		return false
	}
	if f.attempts--; f.attempts <= 0 {
		f.sec |= secExpired
	}
	return true
}

func (f *fakeDrive) Exec(_ context.Context, cdb CDB, dir Direction, data []byte, _ time.Duration) (Reply, error) {
	f.cdbs = append(f.cdbs, cdb)
	if dir == ToDevice {
		f.payloads = append(f.payloads, bytes.Clone(data))
	}
	locked, enabled, expired := f.sec&secLocked != 0, f.sec&secEnabled != 0, f.sec&secExpired != 0
	switch cdb[14] {
	case CmdIdentifyDevice:
		copy(data, identify(f.sec, 1, 1))
	case CmdSecuritySetPassword:
		if locked || enabled {
			return f.reply(true), nil
		}
		var pw Password
		copy(pw[:], data[2:34])
		f.pw = &pw
		f.sec |= secEnabled
		if f.lostSetReply {
			return Reply{Host: 0x03}, nil // DID_TIME_OUT
		}
	case CmdSecurityUnlock:
		if !locked || expired || f.mismatch(data) {
			return f.reply(true), nil
		}
		f.sec &^= secLocked
	case CmdSecurityEraseUnit:
		if f.failUnit || expired || f.mismatch(data) {
			return f.reply(true), nil
		}
		if !f.staysOn {
			f.sec &^= secEnabled | secLocked
			f.pw = nil
		}
	case CmdSecurityDisablePassword:
		if locked || !enabled {
			return f.reply(true), nil
		}
		var pw Password
		copy(pw[:], data[2:34])
		if *f.pw != pw {
			return f.reply(true), nil
		}
		f.sec &^= secEnabled
		f.pw = nil
	}
	return f.reply(false), nil
}

// sent lists the CDBs in hex and the password of each data-out block.
func (f *fakeDrive) sent() (cdbs []string, pws []string, ctl []string) {
	for _, c := range f.cdbs {
		cdbs = append(cdbs, hex.EncodeToString(c[:]))
	}
	for _, p := range f.payloads {
		if len(p) != 512 || !bytes.Equal(p[34:], make([]byte, 478)) {
			pws = append(pws, fmt.Sprintf("bad block of %d bytes", len(p)))
			continue
		}
		pws = append(pws, strings.TrimRight(string(p[2:34]), "\x00"))
		ctl = append(ctl, hex.EncodeToString(p[:2]))
	}
	return cdbs, pws, ctl
}

// The CDBs (SAT-4 Table 162): IDENTIFY is PIO Data-In (08h, 2Eh); the
// security commands with a password block PIO Data-Out (0Ah, 26h), one
// block; ERASE PREPARE Non-data (06h, 20h).
const (
	cdbIdentify = "85082e0000000100000000000040ec00"
	cdbSetPW    = "850a260000000100000000000040f100"
	cdbUnlock   = "850a260000000100000000000040f200"
	cdbPrepare  = "85062000000000000000000000" + "40f300"
	cdbUnit     = "850a260000000100000000000040f400"
	cdbDisable  = "850a260000000100000000000040f600"
)

func pwOf(s string) *Password {
	var pw Password
	copy(pw[:], s)
	return &pw
}

func TestSecureEraseSequences(t *testing.T) {
	// Password block word 0 (little-endian): bit 0 identifier (0 user),
	// bit 1 enhanced erase.
	const user, userEnhanced = "0000", "0200"
	cases := []struct {
		name        string
		drive       fakeDrive
		instruction string
		cdbs        []string
		pws         []string
		ctl         []string
		message     []string
	}{
		{"fresh drive, the controller's password, enhanced", fakeDrive{sec: 0x0021}, machinePW,
			[]string{cdbIdentify, cdbSetPW, cdbPrepare, cdbUnit, cdbIdentify},
			[]string{machinePW, machinePW}, []string{user, userEnhanced},
			[]string{"ata-security-erase-enhanced", "Wipe.ata_password"}},
		{"fresh drive, no password sent: the default, fixed-format sense", fakeDrive{sec: 0x0001, fixed: true}, "",
			[]string{cdbIdentify, cdbSetPW, cdbPrepare, cdbUnit, cdbIdentify},
			[]string{"anvil-erase", "anvil-erase"}, []string{user, user},
			[]string{"ata-security-erase (user password: the default \"anvil-erase\")"}},
		{"locked by an interrupted erase with the default; the controller's refused first", fakeDrive{sec: 0x0027, pw: pwOf(DefaultPassword), attempts: 5}, machinePW,
			[]string{cdbIdentify, cdbUnlock, cdbUnlock, cdbDisable, cdbSetPW, cdbPrepare, cdbUnit, cdbIdentify},
			[]string{machinePW, "anvil-erase", "anvil-erase", machinePW, machinePW}, []string{user, user, user, user, userEnhanced},
			[]string{"security was locked", "opened with the default password"}},
		{"locked with the controller's password, fixed-format sense", fakeDrive{sec: 0x0007, pw: pwOf(machinePW), attempts: 5, fixed: true}, machinePW,
			[]string{cdbIdentify, cdbUnlock, cdbDisable, cdbSetPW, cdbPrepare, cdbUnit, cdbIdentify},
			[]string{machinePW, machinePW, machinePW, machinePW}, []string{user, user, user, user},
			[]string{"opened with the controller's password"}},
		{"enabled, not locked (SEC5): DISABLE PASSWORD finds the password", fakeDrive{sec: 0x0003, pw: pwOf(DefaultPassword), attempts: 5}, machinePW,
			[]string{cdbIdentify, cdbDisable, cdbDisable, cdbSetPW, cdbPrepare, cdbUnit, cdbIdentify},
			[]string{machinePW, "anvil-erase", machinePW, machinePW}, []string{user, user, user, user},
			[]string{"security was enabled", "opened with the default password"}},
	}
	for _, c := range cases {
		f := c.drive
		k, err := KnownPasswords(c.instruction)
		if err != nil {
			t.Fatal(err)
		}
		res, err := (&Disk{T: &f, Name: "/dev/sdz"}).SecureErase(context.Background(), k, nil)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		cdbs, pws, ctl := f.sent()
		if strings.Join(cdbs, " ") != strings.Join(c.cdbs, " ") {
			t.Errorf("%s: CDBs\n got %v\nwant %v", c.name, cdbs, c.cdbs)
		}
		if strings.Join(pws, "|") != strings.Join(c.pws, "|") || strings.Join(ctl, " ") != strings.Join(c.ctl, " ") {
			t.Errorf("%s: password blocks %q words 0 %v, want %q %v", c.name, pws, ctl, c.pws, c.ctl)
		}
		if f.sec&(secEnabled|secLocked) != 0 {
			t.Errorf("%s: security left %#x", c.name, f.sec)
		}
		msg := res.String()
		for _, m := range c.message {
			if !strings.Contains(msg, m) {
				t.Errorf("%s: result %q lacks %q", c.name, msg, m)
			}
		}
		if strings.Contains(msg, machinePW) {
			t.Errorf("%s: result %q holds the password", c.name, msg)
		}
	}
}

func TestSecureEraseFailures(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		// An aborted ERASE UNIT is an error in both sense formats (with
		// fixed-format sense the old decoder saw success) and the password
		// is removed again.
		f := &fakeDrive{sec: 0x0001, failUnit: true, fixed: fixed}
		k, _ := KnownPasswords(machinePW)
		_, err := (&Disk{T: f, Name: "/dev/sdz"}).SecureErase(context.Background(), k, nil)
		cdbs, _, _ := f.sent()
		if !errors.Is(err, ErrAborted) || cdbs[len(cdbs)-1] != cdbDisable || f.sec&secEnabled != 0 {
			t.Errorf("fixed=%v: err %v, commands %v, security %#x", fixed, err, cdbs, f.sec)
		}
		if err != nil && (!strings.Contains(err.Error(), "ABRT") || !strings.Contains(err.Error(), "/dev/sdz")) {
			t.Errorf("fixed=%v: %q does not name ABRT and the drive", fixed, err)
		}
	}

	// SET PASSWORD whose answer was lost: the drive took the password, so
	// it is taken off again before the error is returned.
	lost := &fakeDrive{sec: 0x0001, lostSetReply: true}
	if _, err := (&Disk{T: lost, Name: "/dev/sdy"}).SecureErase(context.Background(), Known{Erase: *pwOf("x")}, nil); err == nil || lost.sec&secEnabled != 0 {
		t.Errorf("SET PASSWORD with a lost answer: err %v, security %#x (the password stayed on the drive)", err, lost.sec)
	}

	f := &fakeDrive{sec: 0x0001, staysOn: true}
	if _, err := (&Disk{T: f}).SecureErase(context.Background(), Known{Erase: *pwOf("x")}, nil); err == nil || !strings.Contains(err.Error(), "still enabled") {
		t.Errorf("erase that left security enabled: %v", err)
	}
	f = &fakeDrive{sec: 0x0009}
	if _, err := (&Disk{T: f}).SecureErase(context.Background(), Known{Erase: *pwOf("x")}, nil); !errors.Is(err, ErrFrozen) || len(f.cdbs) != 1 {
		t.Errorf("frozen: %v after %d commands", err, len(f.cdbs))
	}
	// A SATL that ignores CK_COND returns no registers: nothing proves
	// IDENTIFY worked, so nothing else is sent.
	f = &fakeDrive{sec: 0x0001, noSense: true}
	if _, err := (&Disk{T: f}).SecureErase(context.Background(), Known{Erase: *pwOf("x")}, nil); !errors.Is(err, ErrNoRegisters) || len(f.cdbs) != 1 {
		t.Errorf("no sense: %v after %d commands", err, len(f.cdbs))
	}
}

func TestLockedWithAnUnknownPassword(t *testing.T) {
	cases := []struct {
		name     string
		drive    fakeDrive
		cdbs     []string
		err      error
		contains string
	}{
		{"both refused, attempts left", fakeDrive{sec: 0x0007, pw: pwOf("someone else's"), attempts: 5},
			[]string{cdbIdentify, cdbUnlock, cdbUnlock, cdbIdentify}, ErrUnknownPassword, "attempt limit"},
		{"both refused, the counter runs out", fakeDrive{sec: 0x0007, pw: pwOf("someone else's"), attempts: 2, fixed: true},
			[]string{cdbIdentify, cdbUnlock, cdbUnlock, cdbIdentify}, ErrUnknownPassword, "now exhausted"},
		{"counter already exhausted: nothing is tried", fakeDrive{sec: 0x0017, pw: pwOf("someone else's")},
			[]string{cdbIdentify}, ErrCountExpired, "power-cycle"},
	}
	for _, c := range cases {
		f := c.drive
		k, _ := KnownPasswords(machinePW)
		_, err := (&Disk{T: &f, Name: "/dev/sdz"}).SecureErase(context.Background(), k, nil)
		cdbs, _, _ := f.sent()
		if !errors.Is(err, c.err) || strings.Join(cdbs, " ") != strings.Join(c.cdbs, " ") {
			t.Errorf("%s: %v after %v", c.name, err, cdbs)
			continue
		}
		for _, want := range []string{"/dev/sdz", `serial "WD-WCC4E1234567"`, c.contains} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q lacks %q", c.name, err, want)
			}
		}
		if strings.Contains(err.Error(), machinePW) {
			t.Errorf("%s: the error holds the password: %q", c.name, err)
		}
	}
}

func TestUnlockWithoutErase(t *testing.T) {
	f := &fakeDrive{sec: 0x0007, pw: pwOf(DefaultPassword), attempts: 5, fixed: true}
	what, err := (&Disk{T: f, Name: "/dev/sdz"}).Unlock(context.Background(), Known{Erase: *pwOf(DefaultPassword)})
	cdbs, pws, _ := f.sent()
	want := []string{cdbIdentify, cdbUnlock, cdbDisable, cdbIdentify}
	if err != nil || strings.Join(cdbs, " ") != strings.Join(want, " ") || strings.Join(pws, "|") != "anvil-erase|anvil-erase" || f.sec&(secEnabled|secLocked) != 0 {
		t.Fatalf("unlock: %q, %v; sent %v %q; security %#x", what, err, cdbs, pws, f.sec)
	}
	f = &fakeDrive{sec: 0x0001}
	if what, err := (&Disk{T: f}).Unlock(context.Background(), Known{Erase: *pwOf(DefaultPassword)}); err != nil || len(f.cdbs) != 1 || what != "security already disabled" {
		t.Fatalf("unlock of a disabled drive: %q, %v, %d commands", what, err, len(f.cdbs))
	}
}
