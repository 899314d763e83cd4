package boot

import (
	"net"
	"sync"
)

// LimitListener bounds the connections a listener keeps open: at most
// total at once (Accept waits for a slot), and at most perSource from one
// client address (more are closed at once), so one host on the boot
// network cannot hold every slot with slow downloads.
func LimitListener(l net.Listener, total, perSource int) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, total), perSource: perSource, open: map[string]int{}}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	perSource int
	mu        sync.Mutex
	open      map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		l.slots <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		src, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil {
			src = c.RemoteAddr().String()
		}
		l.mu.Lock()
		if l.open[src] >= l.perSource {
			l.mu.Unlock()
			c.Close()
			<-l.slots
			continue
		}
		l.open[src]++
		l.mu.Unlock()
		return &limitConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.open[src]--; l.open[src] <= 0 {
				delete(l.open, src)
			}
			l.mu.Unlock()
			<-l.slots
		}}, nil
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
