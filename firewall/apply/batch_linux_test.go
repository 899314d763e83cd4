package apply

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestOneBatchLargeSets checks the batch the applier sends for 60,000
// elements (no kernel needed): one batch, whose element lists are split
// into messages that each fit the 16-bit netlink attribute length and
// together carry every element.
func TestOneBatchLargeSets(t *testing.T) {
	rs := largeRuleset(40000, 15000, 5000)
	p, err := translate(rs, planSwap(rs.Table, "", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs, what, err := p.encode()
	if err != nil {
		t.Fatal(err)
	}
	if first, last := msgs[0].Header.Type, msgs[len(msgs)-1].Header.Type; first != unix.NFNL_MSG_BATCH_BEGIN || last != unix.NFNL_MSG_BATCH_END {
		t.Fatalf("batch framed by %v … %v", first, last)
	}
	if got := len(msgs) - 2; got != p.messages || got != len(what) {
		t.Errorf("%d messages in the batch, plan counted %d, %d descriptions", got, p.messages, len(what))
	}
	// Only the last message asks for an acknowledgement, none for echoes.
	for i, m := range msgs {
		wantAck := i == len(msgs)-2
		if got := m.Header.Flags&netlink.Acknowledge != 0; got != wantAck {
			t.Errorf("message %d (%s): acknowledge %v, want %v", i, m.Header.Type, got, wantAck)
		}
		if m.Header.Flags&netlink.Echo != 0 {
			t.Errorf("message %d: asks for an echo", i)
		}
	}
	msgType := func(m netlink.Message) uint16 { return uint16(m.Header.Type) & 0xff }
	perSet := map[string]int{}
	chunks := map[string]int{}
	size := 0
	for _, m := range msgs[1 : len(msgs)-1] {
		size += len(m.Data) + 16
		if msgType(m) != unix.NFT_MSG_NEWSETELEM {
			continue
		}
		attrs, err := netlink.UnmarshalAttributes(m.Data[4:])
		if err != nil {
			t.Fatalf("NEWSETELEM does not decode: %v", err)
		}
		var name string
		for _, a := range attrs {
			switch a.Type & ^uint16(unix.NLA_F_NESTED) {
			case unix.NFTA_SET_ELEM_LIST_SET:
				name = string(a.Data[:len(a.Data)-1])
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				if len(a.Data)+4 > 0xffff {
					t.Errorf("element list of %d bytes overflows the attribute length", len(a.Data))
				}
				elems, err := netlink.UnmarshalAttributes(a.Data)
				if err != nil {
					t.Fatalf("element list does not decode: %v", err)
				}
				perSet[name] += len(elems)
			}
		}
		chunks[name]++
	}
	for _, s := range rs.Sets {
		want, err := elements(s)
		if err != nil {
			t.Fatal(err)
		}
		if perSet[s.Name] != len(want) {
			t.Errorf("set %s: %d elements sent, want %d", s.Name, perSet[s.Name], len(want))
		}
		if chunks[s.Name] < 2 {
			t.Errorf("set %s: %d element messages, want it split", s.Name, chunks[s.Name])
		}
	}
	if size > p.bytes {
		t.Errorf("batch is %d bytes, above the plan's estimate %d (the socket buffers are sized from it)", size, p.bytes)
	}
	t.Logf("%d messages, %d bytes (estimated %d); element messages per set: %v", len(msgs), size, p.bytes, chunks)
}
