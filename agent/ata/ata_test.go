package ata

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCDBBytes(t *testing.T) {
	cases := []struct {
		name string
		cdb  CDB
		want string
	}{
		// byte 0 85h; byte 1 PROTOCOL=4 (PIO Data-In) <<1 = 08h, EXTEND 0;
		// byte 2 CK_COND(20h)|T_DIR(08h)|BYTE_BLOCK(04h)|T_LENGTH=2 = 2Eh;
		// byte 6 COUNT=1; byte 13 DEVICE 40h (LBA); byte 14 COMMAND ECh.
		{"SAT-4 Table 162 ATA PASS-THROUGH(16), ACS-4 7.12 IDENTIFY DEVICE (ECh), PIO Data-In", IdentifyDevice(), "85082e00000001000000000000" + "40ec00"},
		// PROTOCOL=5 (PIO Data-Out) <<1 = 0Ah; T_DIR 0: 26h.
		{"ACS-4 7.45 SECURITY SET PASSWORD (F1h), PIO Data-Out, one 512-byte block", SecuritySetPassword(), "850a2600000001000000000000" + "40f100"},
		// PROTOCOL=3 (Non-data) <<1 = 06h; no transfer: T_LENGTH 0, only CK_COND.
		{"ACS-4 7.43 SECURITY ERASE PREPARE (F3h), Non-data", SecurityErasePrepare(), "85062000000000000000000000" + "40f300"},
		{"ACS-4 7.44 SECURITY ERASE UNIT (F4h), PIO Data-Out", SecurityEraseUnit(), "850a2600000001000000000000" + "40f400"},
		{"ACS-4 7.42 SECURITY DISABLE PASSWORD (F6h), PIO Data-Out", SecurityDisablePassword(), "850a2600000001000000000000" + "40f600"},
	}
	for _, c := range cases {
		if got := hex.EncodeToString(c.cdb[:]); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestPasswordBlock(t *testing.T) {
	var pw Password
	copy(pw[:], "temporary-password-0123456789abc")
	b := PasswordBlock(false, true, pw)
	// ACS-4 Table 246: word 0 bit 0 identifier (0 = user), bit 1 enhanced erase; words 1-16 password.
	if b[0] != 0x02 || b[1] != 0 || !bytes.Equal(b[2:34], pw[:]) || !bytes.Equal(b[34:], make([]byte, 478)) {
		t.Errorf("password block % x", b[:36])
	}
	if m := PasswordBlock(true, false, pw); m[0] != 0x01 {
		t.Errorf("master identifier: % x", m[:2])
	}
}

// identify builds IDENTIFY DEVICE data (ACS-4 Table 45) with a valid
// integrity word.
func identify(sec uint16, w89, w90 uint16) []byte {
	b := make([]byte, 512)
	put := func(word int, v uint16) { binary.LittleEndian.PutUint16(b[2*word:], v) }
	str := func(word int, s string, n int) { // ATA strings: two characters per word, first in bits 15:8
		s += strings.Repeat(" ", 2*n-len(s))
		for i := 0; i < n; i++ {
			put(word+i, uint16(s[2*i])<<8|uint16(s[2*i+1]))
		}
	}
	str(10, "WD-WCC4E1234567", 10) // serial, words 10-19
	str(23, "82.00A82", 4)         // firmware, words 23-26
	str(27, "WDC WD10EZEX-08WN4A0", 20)
	put(82, 0x746b) // command set supported, bit 1 security
	if sec&1 == 0 {
		put(82, 0x7469)
	}
	put(89, w89)
	put(90, w90)
	put(100, 0x6db0) // 1953525168 sectors
	put(101, 0x7470)
	put(106, 0x6003) // valid, multiple logical per physical (4096/512), no long logical
	put(128, sec)
	put(255, 0x00a5)
	var sum uint8
	for _, c := range b {
		sum += c
	}
	b[511] = -sum // checksum byte makes the sum 0
	return b
}

func TestParseIdentify(t *testing.T) {
	id, err := ParseIdentify(identify(0x0021, 0x0032, 0x8064))
	if err != nil {
		t.Fatal(err)
	}
	if id.Serial != "WD-WCC4E1234567" || id.Firmware != "82.00A82" || id.Model != "WDC WD10EZEX-08WN4A0" || id.Sectors != 1953525168 || id.LogicalSectorSize != 512 {
		t.Errorf("%+v", id)
	}
	// word 89 = 50 units of 2 min (bit 15 clear: bits 7:0); word 90 extended: 100 units.
	if id.EraseTime != 100*time.Minute || id.EnhancedEraseTime != 200*time.Minute {
		t.Errorf("erase times %v / %v", id.EraseTime, id.EnhancedEraseTime)
	}
	if s := id.Security; !s.Supported || s.Enabled || s.Frozen || !s.EnhancedErase {
		t.Errorf("security %+v", s)
	}
	bad := identify(0x0021, 0, 0)
	bad[100] ^= 1
	if _, err := ParseIdentify(bad); !errors.Is(err, ErrChecksum) {
		t.Errorf("corrupt integrity word: %v", err)
	}
	if _, err := ParseIdentify(make([]byte, 100)); !errors.Is(err, ErrShort) {
		t.Errorf("short: %v", err)
	}
}

func TestPlan(t *testing.T) {
	cases := []struct {
		name string
		sec  uint16
		want error
		enh  bool
	}{
		{"not supported (QEMU's drives)", 0x0000, ErrSecurityUnsupported, false},
		{"frozen by the BIOS", 0x0009, ErrFrozen, false},
		{"locked", 0x0007, ErrLocked, false},
		{"password set by someone else", 0x0003, ErrSecurityEnabled, false},
		{"supported, normal erase", 0x0001, nil, false},
		{"supported, enhanced erase", 0x0021, nil, true},
	}
	for _, c := range cases {
		id, err := ParseIdentify(identify(c.sec, 0x0005, 0x0002))
		if err != nil {
			t.Fatal(err)
		}
		st, err := Plan(id)
		if !errors.Is(err, c.want) || (err == nil && st.Enhanced != c.enh) {
			t.Errorf("%s: %+v, %v", c.name, st, err)
		}
		if err == nil {
			want := 10*time.Minute + map[bool]time.Duration{false: 15 * time.Minute, true: 6 * time.Minute}[c.enh]
			if st.Timeout != want {
				t.Errorf("%s: timeout %v, want %v", c.name, st.Timeout, want)
			}
		}
	}
}

// fakeDrive plays a drive's security state machine and records what it got.
type fakeDrive struct {
	sec      uint16
	cmds     []uint8
	payloads [][]byte
	failUnit bool
	staysOn  bool
}

func (f *fakeDrive) Exec(_ context.Context, cdb CDB, dir Direction, data []byte, _ time.Duration) ([]byte, error) {
	cmd := cdb[14]
	f.cmds = append(f.cmds, cmd)
	if dir == ToDevice {
		f.payloads = append(f.payloads, bytes.Clone(data))
	}
	switch cmd {
	case CmdIdentifyDevice:
		copy(data, identify(f.sec, 1, 1))
	case CmdSecuritySetPassword:
		f.sec |= 0x0002
	case CmdSecurityEraseUnit:
		if f.failUnit {
			// Descriptor sense: ATA Status Return with ERR and ABRT.
			s := make([]byte, 22)
			s[0], s[7] = 0x72, 14
			s[8], s[9] = 0x09, 0x0c
			s[8+3], s[8+13] = 0x04, 0x51
			return s, nil
		}
		if !f.staysOn {
			f.sec &^= 0x0002
		}
	case CmdSecurityDisablePassword:
		f.sec &^= 0x0002
	}
	return nil, nil
}

func TestSecureEraseSequence(t *testing.T) {
	f := &fakeDrive{sec: 0x0021}
	res, err := (&Disk{T: f}).SecureErase(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint8{CmdIdentifyDevice, CmdSecuritySetPassword, CmdSecurityErasePrepare, CmdSecurityEraseUnit, CmdIdentifyDevice}
	if !bytes.Equal(f.cmds, want) || res.Method != "ata-security-erase-enhanced" {
		t.Fatalf("commands % x, method %s", f.cmds, res.Method)
	}
	set, unit := f.payloads[0], f.payloads[1]
	if set[0] != 0 || unit[0] != 0x02 || !bytes.Equal(set[2:34], unit[2:34]) || bytes.Equal(set[2:34], make([]byte, 32)) {
		t.Errorf("set % x / unit % x: the erase must use the password just set, user identifier, enhanced", set[:8], unit[:8])
	}
}

func TestSecureEraseFailuresUnlockTheDrive(t *testing.T) {
	f := &fakeDrive{sec: 0x0001, failUnit: true}
	_, err := (&Disk{T: f}).SecureErase(context.Background(), nil)
	if !errors.Is(err, ErrAborted) || f.cmds[len(f.cmds)-1] != CmdSecurityDisablePassword || f.sec&2 != 0 {
		t.Fatalf("err %v, commands % x, security %#x", err, f.cmds, f.sec)
	}
	f = &fakeDrive{sec: 0x0001, staysOn: true}
	if _, err := (&Disk{T: f}).SecureErase(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "still enabled") {
		t.Fatalf("erase that left security enabled: %v", err)
	}
	f = &fakeDrive{sec: 0x0009}
	if _, err := (&Disk{T: f}).SecureErase(context.Background(), nil); !errors.Is(err, ErrFrozen) || len(f.cmds) != 1 {
		t.Fatalf("frozen: %v after % x", err, f.cmds)
	}
}

func TestDecodeSense(t *testing.T) {
	// SAT-4 ATA Status Return descriptor: code 09h, length 0Ch, EXTEND, ERROR, COUNT x2, LBA x6, DEVICE, STATUS.
	s, _ := hex.DecodeString("720b00000000000e" + "090c0004" + "0000" + "000000000000" + "40" + "51")
	status, errReg, ok := DecodeSense(s)
	if !ok || status != 0x51 || errReg != 0x04 {
		t.Fatalf("status %#x error %#x ok %v", status, errReg, ok)
	}
	if err := CheckSense(0xf4, s); !errors.Is(err, ErrAborted) {
		t.Fatalf("ABRT: %v", err)
	}
	if _, _, ok := DecodeSense([]byte{0x70, 0, 5}); ok {
		t.Error("fixed-format sense decoded as descriptor")
	}
}

func FuzzParseIdentify(f *testing.F) {
	f.Add(identify(0x0021, 0x0032, 0x8064))
	f.Add(identify(0, 0, 0))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := ParseIdentify(b); err == nil {
			_, _ = Plan(id)
		}
		_, _, _ = DecodeSense(b)
	})
}
