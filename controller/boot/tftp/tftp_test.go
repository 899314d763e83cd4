package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve starts a server for the given files on loopback.
func serve(t *testing.T, files map[string][]byte, opts ...Option) net.Addr {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	s, err := New(paths, append([]Option{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithRetransmit(200*time.Millisecond, 5)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pc.LocalAddr()
}

// client is a minimal TFTP reader that can drop packets on purpose.
type client struct {
	t *testing.T
	c *net.UDPConn
}

func newClient(t *testing.T) *client {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t, c}
}

func (c *client) read() ([]byte, *net.UDPAddr) {
	buf := make([]byte, 70000)
	c.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := c.c.ReadFromUDP(buf)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return buf[:n], from
}

// get fetches name with opts; drop(block) true skips ACKing that DATA once.
func (c *client) get(server net.Addr, name string, drop func(uint16) bool, opts ...[2]string) ([]byte, []byte, error) {
	if _, err := c.c.WriteTo(encodeRequest(name, "octet", opts...), server); err != nil {
		return nil, nil, err
	}
	var out, oack []byte
	dropped := map[uint16]bool{}
	for {
		pkt, from := c.read()
		switch binary.BigEndian.Uint16(pkt) {
		case opERROR:
			return out, oack, errors.New(string(pkt[4 : len(pkt)-1]))
		case opOACK:
			oack = pkt[2:]
			c.c.WriteTo(encodeACK(0), from)
		case opDATA:
			blk := binary.BigEndian.Uint16(pkt[2:])
			if drop != nil && drop(blk) && !dropped[blk] {
				dropped[blk] = true
				continue // lost: the server must resend
			}
			want := uint16(len(out)/max(blockSizeOf(oack), 1) + 1)
			if blk == want {
				out = append(out, pkt[4:]...)
			}
			c.c.WriteTo(encodeACK(blk), from)
			if blk == want && len(pkt)-4 < blockSizeOf(oack) {
				return out, oack, nil
			}
		}
	}
}

func blockSizeOf(oack []byte) int {
	f := strings.Split(string(oack), "\x00")
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == "blksize" {
			var n int
			for _, r := range f[i+1] {
				n = n*10 + int(r-'0')
			}
			return n
		}
	}
	return 512
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestTransfers(t *testing.T) {
	files := map[string][]byte{
		"undionly.kpxe": randomBytes(70_123),
		"exact.bin":     randomBytes(512 * 4), // ends with an empty DATA
		"empty.bin":     {},
	}
	srv := serve(t, files)
	cases := []struct {
		name     string
		file     string
		opts     [][2]string
		wantOACK string
		drop     func(uint16) bool
	}{
		{"plain 512-byte blocks", "undionly.kpxe", nil, "", nil},
		{"blksize capped to Ethernet, tsize", "undionly.kpxe", [][2]string{{"blksize", "9000"}, {"tsize", "0"}}, "blksize\x001468\x00tsize\x0070123\x00", nil},
		{"case-insensitive options, unknown ignored", "undionly.kpxe", [][2]string{{"BLKSIZE", "1024"}, {"windowsize", "4"}}, "blksize\x001024\x00", nil},
		{"file a multiple of the block size", "exact.bin", nil, "", nil},
		{"empty file", "empty.bin", nil, "", nil},
		{"lost packets are resent", "undionly.kpxe", [][2]string{{"blksize", "1024"}}, "blksize\x001024\x00", func(b uint16) bool { return b%7 == 3 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, oack, err := newClient(t).get(srv, c.file, c.drop, c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, files[c.file]) {
				t.Errorf("got %d bytes, want %d identical", len(got), len(files[c.file]))
			}
			if string(oack) != c.wantOACK {
				t.Errorf("OACK %q, want %q", oack, c.wantOACK)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	srv := serve(t, map[string][]byte{"ipxe.efi": []byte("EFI")})
	if _, _, err := newClient(t).get(srv, "../../etc/passwd", nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("unknown file: %v", err)
	}
	if _, _, err := newClient(t).get(srv, "ipxe.efi", nil, [2]string{"blksize", "2"}); err == nil || !strings.Contains(err.Error(), "blksize") {
		t.Errorf("blksize 2: %v", err)
	}
	c := newClient(t)
	wrq := encodeRequest("ipxe.efi", "octet")
	wrq[1] = opWRQ
	c.c.WriteTo(wrq, srv)
	if pkt, _ := c.read(); binary.BigEndian.Uint16(pkt) != opERROR || binary.BigEndian.Uint16(pkt[2:]) != errAccess {
		t.Errorf("write request: %q", pkt)
	}
	for _, junk := range [][]byte{{0}, {0, 1, 'a'}, {0, 9, 'x', 0, 'y', 0}, {0, 1, 'f', 0}} {
		c.c.WriteTo(junk, srv)
		if pkt, _ := c.read(); binary.BigEndian.Uint16(pkt) != opERROR || binary.BigEndian.Uint16(pkt[2:]) != errIllegal {
			t.Errorf("junk %q: answer %q", junk, pkt)
		}
	}
	// The server still works.
	if got, _, err := newClient(t).get(srv, "ipxe.efi", nil); err != nil || string(got) != "EFI" {
		t.Errorf("after refusals: %q %v", got, err)
	}
}

func TestAbandonsASilentClient(t *testing.T) {
	srv := serve(t, map[string][]byte{"f": randomBytes(2000)})
	c := newClient(t)
	c.c.WriteTo(encodeRequest("f", "octet"), srv)
	// Never ACK: the server sends block 1 five times, then gives up.
	n := 0
	for {
		buf := make([]byte, 1500)
		c.c.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := c.c.ReadFrom(buf); err != nil {
			break
		}
		n++
	}
	if n != 5 {
		t.Errorf("block 1 sent %d times, want 5", n)
	}
}

// TestTransferSlots: with every slot taken by a client that never ACKs,
// a new request is answered "busy" at once; once the silent transfer is
// abandoned, requests are served again.
func TestTransferSlots(t *testing.T) {
	srv := serve(t, map[string][]byte{"f": randomBytes(2000)}, WithMaxTransfers(1))
	silent := newClient(t)
	silent.c.WriteTo(encodeRequest("f", "octet"), srv)
	silent.read() // block 1: the slot is taken
	if _, _, err := newClient(t).get(srv, "f", nil); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("second transfer: %v, want busy", err)
	}
	time.Sleep(1500 * time.Millisecond) // 5 × 200 ms of retransmissions, then abandoned
	if got, _, err := newClient(t).get(srv, "f", nil); err != nil || len(got) != 2000 {
		t.Errorf("after the silent client: %d bytes, %v", len(got), err)
	}
}

// TestLongTimeoutNotAcknowledged: a client asking for minutes between
// retransmissions gets the server's own (the option is left out of the
// OACK); a short one is acknowledged.
func TestLongTimeoutNotAcknowledged(t *testing.T) {
	for _, c := range []struct {
		v    string
		want int
	}{{"255", 0}, {"6", 0}, {"5", 5}, {"1", 1}} {
		n, err := negotiate([][2]string{{"timeout", c.v}}, 100)
		if err != nil || n.timeout != c.want || (c.want == 0) != (len(n.oack) == 0) {
			t.Errorf("timeout %s: %+v %v", c.v, n, err)
		}
	}
	if _, err := negotiate([][2]string{{"timeout", "0"}}, 100); err == nil {
		t.Error("timeout 0 accepted")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(encodeRequest("undionly.kpxe", "octet", [2]string{"blksize", "1468"}))
	f.Add([]byte{0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if r.filename == "" || strings.ContainsRune(r.filename, 0) {
			t.Fatalf("parsed a bad filename %q", r.filename)
		}
		if _, err := negotiate(r.options, 1000); err != nil {
			return
		}
	})
}
