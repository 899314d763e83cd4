package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The batch is encoded by google/nftables and sent by the applier.
//
// Conn.Flush (v0.3.0) asks the kernel to acknowledge every message and to
// echo every new rule back (NLM_F_ACK, NLM_F_ECHO), then reads one answer
// per message: for a table of thousands of rules that is as many reply
// messages built by the kernel and two receive calls each, about a quarter
// of the whole apply (measured: 660 → 494 ms for the 16,000 messages of
// 1,000 policies). nft(8) asks for neither. So the applier takes the batch
// google/nftables encoded, clears both flags, asks for one
// acknowledgement on the last message, and sends it in one sendmsg. The
// kernel processes the whole batch inside that call and then queues an
// error for every message it refused, followed by the final
// acknowledgement; each error names the message by its sequence number,
// so a rejection says which rule or set the kernel refused.

// encode returns the plan's (first) batch: BATCH_BEGIN, the table
// messages of its swap, the objects as google/nftables encodes them,
// BATCH_END; and what each message between begin and end does. It runs
// Conn.Flush against a recording dialer; the recorder answers ENOBUFS,
// on which Flush gives up reading acknowledgements at once.
func (p *plan) encode() ([]netlink.Message, []string, error) {
	var batch []netlink.Message
	sends := 0
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		sends++
		batch = req
		return nil, syscall.ENOBUFS
	}))
	if err != nil {
		return nil, nil, err
	}
	what, err := p.queue(c)
	if err != nil {
		return nil, nil, err
	}
	if err := c.Flush(); !errors.Is(err, syscall.ENOBUFS) {
		return nil, nil, fmt.Errorf("encode the batch: %v", err)
	}
	if sends != 1 || len(batch) != len(what)+2 ||
		batch[0].Header.Type != unix.NFNL_MSG_BATCH_BEGIN || batch[len(batch)-1].Header.Type != unix.NFNL_MSG_BATCH_END {
		return nil, nil, fmt.Errorf("encode the batch: google/nftables produced %d sends of %d messages for %d objects", sends, len(batch), len(what))
	}
	tables, tableWhat, err := p.swap.firstOps()
	if err != nil {
		return nil, nil, err
	}
	msgs := append(tables, batch[1:len(batch)-1]...)
	for i := range msgs {
		h := &msgs[i].Header
		h.Flags &^= netlink.Acknowledge | netlink.Echo
		h.Length, h.Sequence, h.PID = 0, 0, 0 // assigned by marshalBatch
	}
	return frame(msgs), append(tableWhat, what...), nil
}

// ErrRejected marks an apply the kernel refused; the transaction was
// aborted and the table is as it was.
var ErrRejected = errors.New("rejected by the kernel")

// errUncertain marks a batch whose outcome is unknown.
var errUncertain = errors.New("outcome unknown")

// batchTimeout bounds the wait for the kernel's answer. The kernel
// processes a batch within the sendmsg call, so the answer is queued by
// the time the call returns; this only guards against a lost one.
const batchTimeout = time.Minute

// send transmits the batch in one sendmsg and collects the kernel's
// answer. It returns nil when the transaction committed; an error
// wrapping ErrRejected, listing each refused message, when it was
// aborted; or an error wrapping errUncertain when the answer was lost.
func send(c *netlink.Conn, batch []netlink.Message, what []string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("send the batch: %w", err)
	}
	// The messages are numbered from begin; the kernel answers with the
	// number of the message it refers to.
	begin := uint32(time.Now().UnixNano())
	wire := marshalBatch(batch, begin)
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), wire, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	}); err != nil || serr != nil {
		// Not processed: nothing changed.
		return fmt.Errorf("send the batch: %w", errors.Join(err, serr))
	}
	last := begin + uint32(len(batch)) - 2
	objectOf := func(seq uint32) string {
		if i := int(seq - begin - 1); seq != begin && i >= 0 && i < len(what) {
			return what[i]
		}
		return "the batch"
	}
	if err := c.SetReadDeadline(time.Now().Add(batchTimeout)); err != nil {
		return fmt.Errorf("%w: %v", errUncertain, err)
	}
	var refused []error
	buf := make([]byte, 64<<10)
	for {
		// Peek at the size first: an error echoes the refused message,
		// up to one element list of 60 KiB.
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf[:1], unix.MSG_PEEK|unix.MSG_TRUNC)
			return rerr != unix.EAGAIN
		}); err != nil {
			return fmt.Errorf("%w: waiting for the kernel's answer: %v", errUncertain, err)
		}
		if rerr == nil {
			if n > len(buf) {
				buf = make([]byte, n)
			}
			err = rc.Read(func(fd uintptr) bool {
				n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
				return rerr != unix.EAGAIN
			})
		}
		if err != nil || rerr != nil {
			// ENOBUFS: answers were dropped, the last one maybe too.
			return fmt.Errorf("%w: receive the kernel's answer: %w", errUncertain, errors.Join(err, rerr))
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("%w: parse the kernel's answer: %v", errUncertain, err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(m.Data))
			seq := m.Header.Seq
			if errno != 0 {
				refused = append(refused, fmt.Errorf("%s: %w", objectOf(seq), syscall.Errno(errno)))
			}
			if seq != last && seq != begin {
				continue
			}
			if len(refused) == 0 {
				return nil
			}
			return rejected(refused)
		}
	}
}

// marshalBatch lays the messages out for one sendmsg, numbered from
// seq, in a buffer allocated once (a batch is megabytes; appending
// message by message copied it over and over).
func marshalBatch(batch []netlink.Message, seq uint32) []byte {
	const hdr = unix.SizeofNlMsghdr
	size := 0
	for _, m := range batch {
		size += hdr + (len(m.Data)+3)&^3
	}
	out := make([]byte, size)
	at := 0
	for i, m := range batch {
		b := out[at:]
		binary.NativeEndian.PutUint32(b[0:4], uint32(hdr+len(m.Data)))
		binary.NativeEndian.PutUint16(b[4:6], uint16(m.Header.Type))
		binary.NativeEndian.PutUint16(b[6:8], uint16(m.Header.Flags|netlink.Request))
		binary.NativeEndian.PutUint32(b[8:12], seq+uint32(i))
		// b[12:16], the port ID, stays 0: the message is for the kernel.
		copy(b[hdr:], m.Data)
		at += hdr + (len(m.Data)+3)&^3
	}
	return out
}

// rejected summarises the kernel's refusals (a wrong reference can make
// every later message fail: the first few say what went wrong).
func rejected(errs []error) error {
	const show = 5
	var b strings.Builder
	for i, e := range errs {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(errs)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	var errno syscall.Errno
	errors.As(errs[0], &errno)
	return &rejection{msg: b.String(), errno: errno}
}

// rejection is the kernel's refusal of a batch; it matches ErrRejected
// and the first refusal's errno.
type rejection struct {
	msg   string
	errno syscall.Errno
}

func (r *rejection) Error() string { return "rejected by the kernel: " + r.msg + hint(r.errno) }

func (r *rejection) Is(target error) bool { return target == ErrRejected || target == r.errno }

// hint names the usual cause of an errno from nf_tables.
func hint(errno syscall.Errno) string {
	switch errno {
	case syscall.ENOENT:
		return " (a jump, goto, verdict map element or lookup names a chain or set that does not exist)"
	case syscall.ELOOP, syscall.EMLINK:
		return " (jumps form a loop or nest deeper than the kernel allows)"
	case syscall.EEXIST:
		return " (a duplicate name, or set elements that overlap)"
	case syscall.EOPNOTSUPP:
		return " (an expression, hook or set type this kernel does not support)"
	case syscall.ENODATA:
		return " (an expression reads a register nothing was loaded into)"
	}
	return ""
}
