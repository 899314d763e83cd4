package labkit

import (
	"strings"
	"testing"
	"time"
)

// A controller log of one UEFI machine's network boot (the lines the DHCP,
// TFTP and boot services write), with another machine's lines between.
const controllerLog = `time=2026-12-07T12:00:00.000Z level=INFO msg="boot service listening" addr=192.168.77.1:8080
time=2026-12-07T12:00:04.100Z level=INFO msg=DHCP service=dhcp mac=52:54:00:77:bb:01 request=DISCOVER reply=OFFER yiaddr=192.168.77.152 bootfile=snponly.efi pxe_port=false
time=2026-12-07T12:00:04.200Z level=INFO msg=DHCP service=dhcp mac=52:54:00:77:fc:02 request=DISCOVER reply=OFFER yiaddr=192.168.77.168 bootfile=http://192.168.77.1:8080/ipxe/boot.ipxe pxe_port=false
time=2026-12-07T12:00:05.300Z level=INFO msg="TFTP sent" service=tftp file=snponly.efi peer=192.168.77.152:1234 bytes=123 blksize=1468
time=2026-12-07T12:00:05.400Z level=INFO msg="chain script served" service=boot remote=192.168.77.168:40000
time=2026-12-07T12:00:08.000Z level=INFO msg=DHCP service=dhcp mac=52:54:00:77:bb:01 request=REQUEST reply=ACK yiaddr=192.168.77.152 bootfile=http://192.168.77.1:8080/ipxe/boot.ipxe pxe_port=false
time=2026-12-07T12:00:08.500Z level=INFO msg="chain script served" service=boot remote=192.168.77.152:40001
time=2026-12-07T12:00:08.600Z level=INFO msg="network boot of an unknown machine: the agent will register it" service=boot uuid=51647d50-171a-4207-9f5d-526ea79685f7 mac=52:54:00:77:bb:01 platform=efi action=agent reason="unknown machine: boot the agent to register it" remote=192.168.77.152:40002
time=2026-12-07T12:00:12.000Z level=INFO msg="boot file served" service=boot file=agent-kernel remote=192.168.77.152:40003 range=false took=3.2s
time=2026-12-07T12:00:14.000Z level=INFO msg="boot file served" service=boot file=agent-initramfs remote=192.168.77.152:40003 range=false took=1.9s
time=2026-12-07T12:01:00.000Z level=INFO msg="chain script served" service=boot remote=192.168.77.152:40009
`

func TestReadTimeline(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, "2026-12-07T12:00:"+s+"Z")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tl, err := ReadTimeline(strings.NewReader(controllerLog), "52:54:00:77:BB:01", at("01.000"))
	if err != nil {
		t.Fatal(err)
	}
	want := Timeline{DHCP: at("04.100"), TFTP: at("05.300"), Chain: at("08.500"), Script: at("08.600"), Kernel: at("12.000"), Initramfs: at("14.000")}
	if tl != want {
		t.Errorf("timeline\n%+v\nwant\n%+v", tl, want)
	}
	// A boot after since only: the machine's later chain request is not
	// its first.
	tl, err = ReadTimeline(strings.NewReader(controllerLog), "52:54:00:77:bb:01", at("30.000"))
	if err != nil || !tl.DHCP.IsZero() || !tl.Chain.IsZero() {
		t.Errorf("nothing is known of a boot after its log: %+v %v", tl, err)
	}
	p := PhasesOf("m", nil, at("00.000"), want)
	if p.DHCP != 4100*time.Millisecond || p.Chain != 8500*time.Millisecond || p.KernelStart != 14*time.Second {
		t.Errorf("phases %+v", p)
	}
}
