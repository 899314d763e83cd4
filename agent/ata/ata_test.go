package ata

import (
	"bytes"
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
		{"ACS-4 7.46 SECURITY UNLOCK (F2h), PIO Data-Out", SecurityUnlock(), "850a2600000001000000000000" + "40f200"},
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

func FuzzParseIdentify(f *testing.F) {
	f.Add(identify(0x0021, 0x0032, 0x8064))
	f.Add(identify(0, 0, 0))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := ParseIdentify(b); err == nil {
			_, _ = Plan(id)
		}
		_, _ = DecodeSense(b)
		_, _ = Check(CmdIdentifyDevice, 0, Reply{Status: statusCheckCondition, Driver: driverSense, Sense: b})
	})
}
