package boot

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestLimitListenerPerSource(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitListener(inner, 10, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two from one host are kept; the third is closed at once.
	a1, a2, a3 := dial("127.0.0.2"), dial("127.0.0.2"), dial("127.0.0.2")
	defer a1.Close()
	defer a2.Close()
	a3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a3.Read(make([]byte, 1)); err != io.EOF && err == nil {
		t.Fatalf("third connection from one source: read %v, want it closed", err)
	}
	// Another host still gets in.
	b := dial("127.0.0.3")
	defer b.Close()
	var server []net.Conn
	for len(server) < 3 {
		select {
		case c := <-accepted:
			defer c.Close()
			server = append(server, c)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d connections accepted, want 3 (two of one source, one of another)", len(server))
		}
	}
	// The server closing one of 127.0.0.2's connections frees its slot.
	for _, c := range server {
		if src, _, _ := net.SplitHostPort(c.RemoteAddr().String()); src == "127.0.0.2" {
			c.Close()
			break
		}
	}
	a4 := dial("127.0.0.2")
	defer a4.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a source's slot was not freed when its connection closed")
	}
}
