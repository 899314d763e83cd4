package nvme

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// cmdBytes spells out struct nvme_passthru_cmd field by field, so the test
// does not share Marshal's code.
func cmdBytes(opcode uint8, nsid, dataLen, cdw10, cdw11 uint32) string {
	b := make([]byte, 72)
	b[0] = opcode
	binary.LittleEndian.PutUint32(b[4:], nsid)     // nsid at offset 4
	binary.LittleEndian.PutUint32(b[36:], dataLen) // data_len at offset 36
	binary.LittleEndian.PutUint32(b[40:], cdw10)   // cdw10 at offset 40
	binary.LittleEndian.PutUint32(b[44:], cdw11)   // cdw11 at offset 44
	return hex.EncodeToString(b)
}

func TestCommandBytes(t *testing.T) {
	cases := []struct {
		name string
		cmd  Command
		want string
	}{
		{"NVMe 2.0 Fig. 273: Identify, CNS 01h (controller) in CDW10 bits 7:0, 4096-byte data",
			IdentifyController(), cmdBytes(0x06, 0, 4096, 0x01, 0)},
		{"NVMe 2.0 Fig. 273: Identify, CNS 00h (namespace) for NSID 1",
			IdentifyNamespace(1), cmdBytes(0x06, 1, 4096, 0x00, 0)},
		{"NVMe 2.0 Fig. 372: Sanitize SANACT=100b crypto erase (bits 2:0), AUSE bit 3",
			Sanitize(SanitizeCryptoErase, false), cmdBytes(0x84, 0, 0, 0x0c, 0)},
		{"NVMe 2.0 Fig. 372: Sanitize SANACT=010b block erase, NDAS bit 9",
			Sanitize(SanitizeBlockErase, true), cmdBytes(0x84, 0, 0, 0x20a, 0)},
		{"NVMe 2.0 Fig. 320: Format NVM SES=010b crypto (bits 11:9), LBAF 1 (bits 3:0)",
			FormatNVM(1, 1, SESCryptoErase), cmdBytes(0x80, 1, 0, 0x401, 0)},
		{"NVMe 2.0 Fig. 320: Format NVM SES=001b user data, LBAF 18 = upper 01b (bits 13:12) lower 0010b",
			FormatNVM(2, 18, SESUserData), cmdBytes(0x80, 2, 0, 0x1202, 0)},
		{"NVMe 2.0 Fig. 197: Get Log Page LID 81h, NUMDL=127 (bits 31:16, 0-based dwords), NSID FFFFFFFFh",
			SanitizeStatusLog(), cmdBytes(0x02, 0xffffffff, 512, 0x007f0081, 0)},
		{"NVMe 2.0 Fig. 197/198: NUMD over 16 bits splits into NUMDL and NUMDU (CDW11 bits 15:0)",
			GetLogPage(0x02, 0, 4<<16+8), cmdBytes(0x02, 0, 4<<16+8, 0x00010002, 0x0001)},
	}
	for _, c := range cases {
		got := c.cmd.Marshal()
		if h := hex.EncodeToString(got[:]); h != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, h, c.want)
		}
	}
	full := Command{Opcode: 1, Flags: 2, Rsvd1: 0x0304, NSID: 5, CDW2: 6, CDW3: 7, Metadata: 8, Addr: 9, MetadataLen: 10, DataLen: 11,
		CDW10: 12, CDW11: 13, CDW12: 14, CDW13: 15, CDW14: 16, CDW15: 17, TimeoutMS: 18, Result: 19}
	b := full.Marshal()
	want := "01020403" + "05000000" + "06000000" + "07000000" + "0800000000000000" + "0900000000000000" +
		"0a000000" + "0b000000" + "0c000000" + "0d000000" + "0e000000" + "0f000000" + "10000000" + "11000000" + "12000000" + "13000000"
	if h := hex.EncodeToString(b[:]); h != want {
		t.Errorf("struct nvme_passthru_cmd layout:\n got %s\nwant %s", h, want)
	}
}

// identifyController builds Identify Controller data with the fields at
// their Fig. 275 offsets.
func identifyController(oacs uint16, sanicap uint32, fna uint8) []byte {
	b := make([]byte, 4096)
	copy(b[4:24], "SERIAL-123          ")                      // SN, bytes 23:04
	copy(b[24:64], "QEMU NVMe Ctrl                          ") // MN, bytes 63:24
	copy(b[64:72], "7.2.0   ")                                 // FR, bytes 71:64
	binary.LittleEndian.PutUint16(b[256:], oacs)               // OACS, bytes 257:256
	binary.LittleEndian.PutUint32(b[328:], sanicap)            // SANICAP, bytes 331:328
	b[524] = fna                                               // FNA, byte 524
	return b
}

func identifyNamespace(flbas uint8, formats ...uint32) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint64(b[0:], 524288) // NSZE, bytes 7:0
	b[25] = uint8(len(formats) - 1)              // NLBAF, 0-based
	b[26] = flbas                                // FLBAS
	for i, f := range formats {
		binary.LittleEndian.PutUint32(b[128+4*i:], f) // LBAF0.., bytes 131:128...
	}
	return b
}

func TestParseIdentify(t *testing.T) {
	c, err := ParseIdentifyController(identifyController(0x010a, 0x3, 0x4))
	if err != nil {
		t.Fatal(err)
	}
	if c.Serial != "SERIAL-123" || c.Model != "QEMU NVMe Ctrl" || c.Firmware != "7.2.0" || c.OACS != 0x010a || c.SANICAP != 3 || c.FNA != 4 {
		t.Errorf("%+v", c)
	}
	if !c.FormatSupported() || !c.CryptoFormat() || !c.SanitizeCrypto() || !c.SanitizeBlock() || c.SanitizeOverwrite() {
		t.Errorf("capability bits of %+v", c)
	}
	// LBAF0 512 B (LBADS 9), LBAF1 4 KiB (LBADS 12) with 8 B metadata; FLBAS selects 1.
	ns, err := ParseIdentifyNamespace(identifyNamespace(0x01, 9<<16, 12<<16|8))
	if err != nil {
		t.Fatal(err)
	}
	if ns.Size != 524288 || len(ns.Formats) != 2 || ns.CurrentFormat() != 1 || ns.Formats[1].DataSizeShift != 12 || ns.Formats[1].MetadataSize != 8 {
		t.Errorf("%+v", ns)
	}
	if _, err := ParseIdentifyNamespace(identifyNamespace(0x05, 9<<16)); err == nil {
		t.Error("FLBAS selecting a format past NLBAF was accepted")
	}
	for _, n := range []int{0, 100, 4095} {
		if _, err := ParseIdentifyController(make([]byte, n)); !errors.Is(err, ErrShort) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func TestDecideErase(t *testing.T) {
	ns := Namespace{Formats: []LBAFormat{{DataSizeShift: 9}, {DataSizeShift: 12}}, FLBAS: 1}
	self := Peer{NSID: 1, Path: "/dev/nvme0n1", Selected: true}
	other := func(sel, prot bool) Peer { return Peer{NSID: 2, Path: "/dev/nvme0n2", Selected: sel, Protected: prot} }
	alone := []Peer{self}
	both := []Peer{self, other(true, false)}
	protected := []Peer{self, other(true, true)}
	unselected := []Peer{self, other(false, false)}
	hidden := []Peer{self, {NSID: 7}} // an active NSID without a block device
	// Identify Controller: OACS bit 1 Format NVM; FNA bit 0 format to all
	// namespaces, bit 1 secure erase to all, bit 2 crypto erase; SANICAP
	// bit 0 crypto, bit 1 block, bit 2 overwrite.
	cases := []struct {
		name   string
		c      Controller
		peers  []Peer
		method string
		scope  Scope
		opcode uint8
		cdw10  uint32
		err    error
	}{
		{"SANICAP CES, the only namespace", Controller{SANICAP: 1, OACS: 2, FNA: 4}, alone, "nvme-sanitize-crypto", ScopeSubsystem, OpSanitize, 0x0c, nil},
		{"SANICAP CES, every namespace selected", Controller{SANICAP: 1, OACS: 2, FNA: 4}, both, "nvme-sanitize-crypto", ScopeSubsystem, OpSanitize, 0x0c, nil},
		{"SANICAP BES only, alone", Controller{SANICAP: 2, OACS: 2, FNA: 4}, alone, "nvme-sanitize-block", ScopeSubsystem, OpSanitize, 0x0a, nil},
		{"sanitize would reach a protected namespace: per-namespace crypto format", Controller{SANICAP: 3, OACS: 2, FNA: 4}, protected, "nvme-format-crypto", ScopeNamespace, OpFormatNVM, 0x401, nil},
		{"sanitize would reach an unselected namespace: per-namespace user-data format", Controller{SANICAP: 3, OACS: 2}, unselected, "nvme-format-user-data", ScopeNamespace, OpFormatNVM, 0x201, nil},
		{"sanitize would reach a namespace without a block device", Controller{SANICAP: 1, OACS: 2}, hidden, "nvme-format-user-data", ScopeNamespace, OpFormatNVM, 0x201, nil},
		{"overwrite-only sanitize is not chosen; FNA crypto format", Controller{SANICAP: 4, OACS: 2, FNA: 4}, alone, "nvme-format-crypto", ScopeNamespace, OpFormatNVM, 0x401, nil},
		{"QEMU 7.2: OACS 0x010a, FNA 0, SANICAP 0, other namespace protected", Controller{OACS: 0x010a}, protected, "nvme-format-user-data", ScopeNamespace, OpFormatNVM, 0x201, nil},
		{"FNA bit 0, all selected: format reaches all, allowed", Controller{OACS: 2, FNA: 1}, both, "nvme-format-user-data", ScopeSubsystem, OpFormatNVM, 0x201, nil},
		{"FNA bit 0, other protected: refused", Controller{OACS: 2, FNA: 1}, protected, "", 0, 0, 0, ErrWouldEraseOthers},
		{"FNA bit 1, other not selected: refused", Controller{OACS: 2, FNA: 2 | 4}, unselected, "", 0, 0, 0, ErrWouldEraseOthers},
		{"FNA bit 1 + crypto, alone: subsystem crypto format", Controller{OACS: 2, FNA: 2 | 4}, alone, "nvme-format-crypto", ScopeSubsystem, OpFormatNVM, 0x401, nil},
		{"sanitize only, other protected: refused", Controller{SANICAP: 1}, protected, "", 0, 0, 0, ErrWouldEraseOthers},
		{"the target itself protected", Controller{OACS: 2}, []Peer{{NSID: 1, Protected: true}}, "", 0, 0, 0, ErrTargetProtected},
		{"nothing", Controller{OACS: 0x0008}, alone, "", 0, 0, 0, ErrNoHardwareErase},
		{"nothing, other protected", Controller{OACS: 0x0008}, protected, "", 0, 0, 0, ErrNoHardwareErase},
	}
	for _, c := range cases {
		p, err := DecideErase(c.c, ns, 1, c.peers)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || p.Method != c.method || p.Scope != c.scope || p.Command.Opcode != c.opcode || p.Command.CDW10 != c.cdw10 {
			t.Errorf("%s: %+v, %v; want %s (%s) opcode %#x cdw10 %#x", c.name, p, err, c.method, c.scope, c.opcode, c.cdw10)
		}
		if p.Command.Opcode == OpFormatNVM && p.Command.NSID != 1 {
			t.Errorf("%s: format names nsid %#x, want 1", c.name, p.Command.NSID)
		}
	}
	// The refusal names what it would destroy.
	_, err := DecideErase(Controller{OACS: 2, FNA: 1}, ns, 1, []Peer{self, other(true, true), {NSID: 3, Path: "/dev/nvme0n3"}})
	for _, want := range []string{"/dev/nvme0n2 (nsid 2) is protected", "/dev/nvme0n3 (nsid 3) is not selected for erase", "FNA 0x01"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %v does not say %q", err, want)
		}
	}
	for _, bad := range []uint32{0, 0xffffffff} {
		if _, err := DecideErase(Controller{OACS: 2}, ns, bad, alone); err == nil {
			t.Errorf("nsid %#x accepted as a single namespace", bad)
		}
	}
}

func nsList(ids ...uint32) []byte {
	b := make([]byte, 4096)
	for i, id := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], id)
	}
	return b
}

func TestNamespaceList(t *testing.T) {
	c := IdentifyActiveNamespaces(0)
	if got := c.Marshal(); hex.EncodeToString(got[:]) != cmdBytes(0x06, 0, 4096, 0x02, 0) {
		t.Errorf("NVMe 2.0 Fig. 273: Identify CNS 02h = %x", got)
	}
	ids, full, err := ParseNamespaceList(nsList(1, 2, 9))
	if err != nil || full || !reflect.DeepEqual(ids, []uint32{1, 2, 9}) {
		t.Errorf("list 1,2,9: %v %v %v", ids, full, err)
	}
	many := make([]uint32, 1024)
	for i := range many {
		many[i] = uint32(i + 1)
	}
	if ids, full, err := ParseNamespaceList(nsList(many...)); err != nil || !full || len(ids) != 1024 {
		t.Errorf("full list: %d ids, full %v, %v", len(ids), full, err)
	}
	for name, b := range map[string][]byte{"decreasing": nsList(3, 2), "broadcast": nsList(0xffffffff), "short": make([]byte, 100)} {
		if _, _, err := ParseNamespaceList(b); err == nil {
			t.Errorf("%s list accepted", name)
		}
	}
	got := MergePeers([]Peer{{NSID: 2, Path: "/dev/nvme0n2"}}, []uint32{1, 2, 3})
	want := []Peer{{NSID: 1}, {NSID: 2, Path: "/dev/nvme0n2"}, {NSID: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MergePeers = %v, want %v", got, want)
	}
}

func TestStatusError(t *testing.T) {
	e := &StatusError{Status: 0x4001}
	if !errors.Is(e, ErrInvalidOpcode) || errors.Is(e, ErrInvalidFormat) || !strings.Contains(e.Error(), "invalid command opcode") || !strings.Contains(e.Error(), "do not retry") {
		t.Errorf("0x4001: %v", e)
	}
	f := &StatusError{Status: 0x410a}
	if !errors.Is(f, ErrInvalidFormat) || f.SCT() != 1 || f.SC() != 0x0a {
		t.Errorf("0x410a: %v", f)
	}
}

// fakeController answers identify and sanitize status from scripts and
// records the commands it got.
type fakeController struct {
	sstat []uint16
	got   []Command
	fail  map[uint8]uint16
}

func (f *fakeController) Submit(cmd *Command, data []byte) (uint32, error) {
	f.got = append(f.got, *cmd)
	if s, ok := f.fail[cmd.Opcode]; ok {
		return 0, &StatusError{Status: s}
	}
	if cmd.Opcode == OpGetLogPage && len(f.sstat) > 0 {
		binary.LittleEndian.PutUint16(data[0:], 0x8000) // SPROG: half way
		binary.LittleEndian.PutUint16(data[2:], f.sstat[0])
		f.sstat = f.sstat[1:]
	}
	return 0, nil
}

func TestSanitizeIsPolledToTheEnd(t *testing.T) {
	f := &fakeController{sstat: []uint16{2, 2, 1 | 1<<8}}
	d := &Device{S: f, NSID: 1, Poll: time.Millisecond}
	var last uint64
	err := d.Erase(context.Background(), Plan{Method: "nvme-sanitize-crypto", Command: Sanitize(SanitizeCryptoErase, false)}, func(done, total uint64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if len(f.got) != 4 || f.got[0].Opcode != OpSanitize || f.got[3].Opcode != OpGetLogPage || last != 65536 {
		t.Errorf("commands %v, last progress %d", f.got, last)
	}
	f = &fakeController{sstat: []uint16{2, 3}}
	d.S = f
	if err := d.Erase(context.Background(), Plan{Method: "s", Command: Sanitize(SanitizeBlockErase, false)}, nil); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("failed sanitize: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.S = &fakeController{sstat: []uint16{2, 2, 2}}
	if err := d.Erase(ctx, Plan{Method: "s", Command: Sanitize(SanitizeBlockErase, false)}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// QEMU answers Sanitize with 0x4001: the error carries the status.
	d.S = &fakeController{fail: map[uint8]uint16{OpSanitize: 0x4001}}
	if err := d.Erase(context.Background(), Plan{Method: "s", Command: Sanitize(SanitizeBlockErase, false)}, nil); !errors.Is(err, ErrInvalidOpcode) {
		t.Errorf("unsupported sanitize: %v", err)
	}
	// A format completes with the command and gets a long timeout.
	fc := &fakeController{}
	d.S = fc
	if err := d.Erase(context.Background(), Plan{Method: "f", Command: FormatNVM(1, 0, SESUserData)}, nil); err != nil || fc.got[0].TimeoutMS == 0 {
		t.Errorf("format: %v, %+v", err, fc.got)
	}
}

func FuzzParseIdentifyController(f *testing.F) {
	f.Add(identifyController(0x010a, 0, 0))
	f.Add(identifyController(0xffff, 0xffffffff, 0xff))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseIdentifyController(b)
		if err == nil {
			_, _ = DecideErase(c, Namespace{Formats: []LBAFormat{{}}}, 1, []Peer{{NSID: 1, Selected: true}, {NSID: 2}})
		}
		_, _ = ParseIdentifyNamespace(b)
		_, _ = ParseSanitizeStatus(b)
		_, _, _ = ParseNamespaceList(b)
	})
}
