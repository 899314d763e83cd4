package labkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Timeline is when the controller saw one machine's network boot steps,
// read from its log (the DHCP, TFTP and boot services log each step with
// the client's MAC or address); zero times were not seen.
type Timeline struct {
	// DHCP is the first DHCP request of the machine's MAC: its firmware's
	// or its NIC ROM's.
	DHCP time.Time
	// TFTP is when iPXE was sent over TFTP (firmware PXE clients only).
	TFTP time.Time
	// Chain is when iPXE fetched the chain script, Script the machine's
	// own script.
	Chain, Script time.Time
	// Kernel and Initramfs are when the agent's files were sent; the
	// kernel starts right after the initramfs.
	Kernel, Initramfs time.Time
}

// logLine is one slog text-handler line: its time and fields.
type logLine struct {
	at     time.Time
	fields map[string]string
}

var fieldRE = regexp.MustCompile(`([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|\S*)`)

func parseLogLine(s string) (logLine, bool) {
	l := logLine{fields: map[string]string{}}
	for _, m := range fieldRE.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		l.fields[m[1]] = v
	}
	t, err := time.Parse(time.RFC3339Nano, l.fields["time"])
	if err != nil {
		return l, false
	}
	l.at = t
	return l, true
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return addr[:i]
	}
	return addr
}

// ReadTimeline reads the first boot of the machine with mac at or after
// since from the controller's log. Addresses are tied to the MAC by the
// DHCP answers (full mode).
func ReadTimeline(r io.Reader, mac string, since time.Time) (Timeline, error) {
	var tl Timeline
	ips := map[string]bool{}
	set := func(t *time.Time, at time.Time) {
		if t.IsZero() {
			*t = at
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l, ok := parseLogLine(sc.Text())
		if !ok || l.at.Before(since) {
			continue
		}
		f := l.fields
		switch f["msg"] {
		case "DHCP":
			if strings.EqualFold(f["mac"], mac) {
				set(&tl.DHCP, l.at)
				if ip := f["yiaddr"]; ip != "" && ip != "0.0.0.0" {
					ips[ip] = true
				}
			}
		case "TFTP sent":
			if ips[hostOf(f["peer"])] {
				set(&tl.TFTP, l.at)
			}
		case "chain script served":
			if ips[hostOf(f["remote"])] {
				set(&tl.Chain, l.at)
			}
		case "network boot", "network boot of an unknown machine: the agent will register it":
			if strings.EqualFold(f["mac"], mac) {
				set(&tl.Script, l.at)
			}
		case "boot file served":
			if !ips[hostOf(f["remote"])] {
				continue
			}
			switch f["file"] {
			case "agent-kernel":
				set(&tl.Kernel, l.at)
			case "agent-initramfs":
				set(&tl.Initramfs, l.at)
			}
		}
		if !tl.Initramfs.IsZero() {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return tl, fmt.Errorf("read the controller log: %w", err)
	}
	return tl, nil
}

// Timeline reads vm's latest network boot (since its power-on) from the
// controller's log.
func (l *Lab) Timeline(vm *VM) (Timeline, error) {
	f, err := os.Open(filepath.Join(l.cfg.Dir, "controller.log"))
	if err != nil {
		return Timeline{}, err
	}
	defer f.Close()
	return ReadTimeline(f, vm.MAC, vm.PoweredOn)
}
