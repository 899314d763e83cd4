package ata

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Sense data as Linux's libata returns it for ATA PASS-THROUGH(16) with
// CK_COND (drivers/ata/libata-scsi.c: ata_gen_passthru_sense builds the
// sense key and ASC/ASCQ with scsi_build_sense, in descriptor format when
// the device's D_SENSE is set and, before Linux 6.10, always for a
// CK_COND success; ata_scsi_set_passthru_sense_fields then adds the ATA
// registers: descriptor 09h, or fixed format with the VALID bit and the
// INFORMATION / COMMAND-SPECIFIC INFORMATION fields as SAT-4 §12.2.2.7).
// An ABRT (status 51h, error 04h) maps to ABORTED COMMAND 0Bh, 00h/00h; a
// success to RECOVERED ERROR 01h, 00h/1Dh ATA PASS-THROUGH INFORMATION
// AVAILABLE.
const (
	// 72h, sense key 01h, ASC/ASCQ 00h/1Dh, additional length 0Eh;
	// descriptor 09h 0Ch: EXTEND 0, ERROR 00h, COUNT, LBA, DEVICE 40h, STATUS 50h.
	descSuccess = "72 01 00 1d 00 00 00 0e  09 0c 00 00 00 00 00 00 00 00 00 00 40 50"
	// The same with ERROR 04h (ABRT) and STATUS 51h (DRDY DSC ERR).
	descAbort = "72 0b 00 00 00 00 00 0e  09 0c 00 04 00 00 00 00 00 00 00 00 40 51"
	// Fixed: F0h (VALID | 70h), sense key 0Bh; INFORMATION = ERROR 04h,
	// STATUS 51h, DEVICE 40h, COUNT 00h; additional length 0Ah;
	// COMMAND-SPECIFIC = flags 00h, LBA 00 00 00; ASC/ASCQ 00h/00h.
	fixedAbort = "f0 00 0b  04 51 40 00  0a  00 00 00 00  00 00  00 00 00 00"
	// Fixed success (Linux 6.10 and later honour D_SENSE=0 for a CK_COND
	// success): sense key 01h, STATUS 50h, ASC/ASCQ 00h/1Dh.
	fixedSuccess = "f0 00 01  00 50 40 00  0a  00 00 00 00  00 1d  00 00 00 00"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("test data %q: %v", s, err)
	}
	return b
}

func TestDecodeSense(t *testing.T) {
	cases := []struct {
		name  string
		sense string
		ok    bool
		want  Registers
	}{
		{"descriptor, success", descSuccess, true,
			Registers{Format: FormatDescriptor, SenseKey: 1, ASCQ: 0x1d, Status: 0x50, Device: 0x40}},
		{"descriptor, ABRT", descAbort, true,
			Registers{Format: FormatDescriptor, SenseKey: 0x0b, Error: 0x04, Status: 0x51, Device: 0x40}},
		{"descriptor, deferred (73h), 48-bit registers", "73 0b 00 00 00 00 00 0e  09 0c 01 04 01 02 03 04 05 06 07 08 40 51", true,
			Registers{Format: FormatDescriptor, SenseKey: 0x0b, Error: 0x04, Status: 0x51, Device: 0x40, Count: 0x02, Extend: true, LBA: 0x070503_080604}},
		{"descriptor, ATA descriptor after an information descriptor", "72 01 00 1d 00 00 00 1a  00 0a 80 00 00 00 00 00 00 00 12 34  09 0c 00 00 00 00 00 00 00 00 00 00 40 50", true,
			Registers{Format: FormatDescriptor, SenseKey: 1, ASCQ: 0x1d, Status: 0x50, Device: 0x40}},
		{"fixed, ABRT", fixedAbort, true,
			Registers{Format: FormatFixed, SenseKey: 0x0b, Error: 0x04, Status: 0x51, Device: 0x40}},
		{"fixed, success", fixedSuccess, true,
			Registers{Format: FormatFixed, SenseKey: 1, ASCQ: 0x1d, Status: 0x50, Device: 0x40}},
		{"fixed, deferred (71h), EXTEND and upper bytes nonzero, LBA", "f1 00 0b  04 51 40 0a  0a  e0 11 22 33  00 00  00 00 00 00", true,
			Registers{Format: FormatFixed, SenseKey: 0x0b, Error: 0x04, Status: 0x51, Device: 0x40, Count: 0x0a, Extend: true, CountUpperNonzero: true, LBAUpperNonzero: true, LBA: 0x332211}},
		{"fixed without VALID: ILLEGAL REQUEST, INVALID FIELD IN CDB, no registers", "70 00 05  00 00 00 00  0a  00 00 00 00  24 00  00 00 00 00", false, Registers{}},
		{"fixed, truncated before ASC/ASCQ", "f0 00 0b 04 51 40 00 04", false, Registers{}},
		{"descriptor without the ATA Status Return descriptor", "72 05 24 00 00 00 00 00", false, Registers{}},
		{"descriptor whose 09h descriptor runs past the additional length", "72 01 00 1d 00 00 00 08  09 0c 00 00 00 00 00 00 00 00 00 00 40 50", false, Registers{}},
		{"vendor-specific response code 7Fh", "7f 00 0b 04 51 40 00", false, Registers{}},
		{"empty (no sense at all)", "", false, Registers{}},
	}
	for _, c := range cases {
		got, ok := DecodeSense(unhex(t, c.sense))
		if ok != c.ok || got != c.want {
			t.Errorf("%s:\n got %+v ok=%v\nwant %+v ok=%v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestCheck(t *testing.T) {
	cc := uint8(statusCheckCondition)
	cases := []struct {
		name    string
		r       Reply
		dataLen int
		want    error  // nil: success
		text    string // in the error
	}{
		{"descriptor success", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, descSuccess)}, 512, nil, ""},
		{"fixed success", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, fixedSuccess)}, 512, nil, ""},
		{"descriptor ABRT", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, descAbort)}, 512, ErrAborted, "error 0x04 (ABRT)"},
		// The bug: fixed-format sense was not decoded, so this read as success.
		{"fixed ABRT", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, fixedAbort)}, 512, ErrAborted, "status 0x51 (DRDY bit4 ERR)"},
		{"DF without ERR", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, "72 0b 00 00 00 00 00 0e  09 0c 00 00 00 00 00 00 00 00 00 00 40 70")}, 0, &DeviceError{}, "DF"},
		{"UNC and ERR: not an abort", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, "72 03 11 00 00 00 00 0e  09 0c 00 40 00 00 00 00 00 00 00 00 40 51")}, 0, &DeviceError{}, "error 0x40 (UNC)"},
		{"clean ATA status but ABORTED COMMAND sense key (a timeout in libata)", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, "72 0b 00 00 00 00 00 0e  09 0c 00 00 00 00 00 00 00 00 00 00 40 50")}, 0, &DeviceError{}, "ABORTED COMMAND"},
		{"BSY in the returned status: registers not valid", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, "72 01 00 1d 00 00 00 0e  09 0c 00 00 00 00 00 00 00 00 00 00 40 d0")}, 0, &DeviceError{}, "BSY"},
		{"GOOD status without sense: CK_COND ignored, nothing proves success", Reply{Status: statusGood}, 0, ErrNoRegisters, "SCSI status 0x00"},
		{"CHECK CONDITION with sense the decoder does not know", Reply{Status: cc, Driver: driverSense, Sense: unhex(t, "70 00 05  00 00 00 00  0a  00 00 00 00  24 00  00 00 00 00")}, 0, ErrNoRegisters, "24 00"},
		{"host status DID_TIME_OUT", Reply{Status: cc, Host: 0x03, Driver: driverSense, Sense: unhex(t, descSuccess)}, 0, ErrTransport, "DID_TIME_OUT"},
		{"host status DID_BAD_TARGET", Reply{Host: 0x04}, 0, ErrTransport, "DID_BAD_TARGET"},
		{"driver status DRIVER_TIMEOUT", Reply{Status: cc, Driver: 0x06, Sense: unhex(t, descSuccess)}, 0, ErrTransport, "driver status 0x6"},
		{"driver status DRIVER_SENSE|SUGGEST_ABORT", Reply{Status: cc, Driver: 0x48, Sense: unhex(t, descSuccess)}, 0, ErrTransport, "driver status 0x48"},
		{"SCSI status BUSY", Reply{Status: 0x08, Sense: unhex(t, descSuccess)}, 0, ErrTransport, "BUSY"},
		{"SCSI status RESERVATION CONFLICT", Reply{Status: 0x18}, 0, ErrTransport, "RESERVATION CONFLICT"},
		{"short IDENTIFY transfer", Reply{Status: cc, Driver: driverSense, Resid: 256, Sense: unhex(t, descSuccess)}, 512, ErrTransport, "256 of 512"},
	}
	for _, c := range cases {
		_, err := Check(CmdSecurityEraseUnit, c.dataLen, c.r)
		switch de := (*DeviceError)(nil); {
		case c.want == nil:
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		case errors.As(c.want, &de):
			if !errors.As(err, &de) || errors.Is(err, ErrAborted) {
				t.Errorf("%s: got %v, want a DeviceError that is not ErrAborted", c.name, err)
			}
		case !errors.Is(err, c.want):
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if err != nil && (!strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), "SECURITY ERASE UNIT")) {
			t.Errorf("%s: %q does not name the command and %q", c.name, err, c.text)
		}
	}
}

func TestErrorBits(t *testing.T) {
	for v, want := range map[uint8]string{0: "none", 0x04: "ABRT", 0x84: "ICRC ABRT", 0x51: "UNC IDNF bit0", 0x12: "IDNF EOM"} {
		if got := ErrorBits(v); got != want {
			t.Errorf("ErrorBits(%#02x) = %q, want %q", v, got, want)
		}
	}
}
