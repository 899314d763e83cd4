// Package bootparams reads the agent's settings from a Linux kernel command
// line (/proc/cmdline), as the boot service's iPXE script writes them:
//
//	anvil.controller=HOST:PORT anvil.token=TOKEN anvil.ca_fp=sha256:HEX anvil.debug=1
//
// anvil.controller= may name several controller replicas, comma-separated
// (HOST:PORT,HOST:PORT,...), or one DNS name with a record per replica; the
// list's format is package ctrladdr's.
//
// and the console= parameters, which installed systems inherit. An
// operator may add anvil.lldp_wait=DURATION (a Go duration such as 5s or
// 1500ms; 0 turns LLDP off): the most the agent waits for its switches'
// LLDP frames before it registers.
//
// Parsing follows the kernel's rules for parameters: space-separated, with
// double quotes allowed around a value (or around the whole parameter).
package bootparams

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/agent/ctrladdr"
)

// Params are the agent settings found on the command line; missing ones are
// empty.
type Params struct {
	// Controller is anvil.controller=: a checked list of controller
	// addresses (ctrladdr.Parse).
	Controller    string
	BootToken     string
	CAFingerprint string
	Debug         bool
	// Console is the machine's console= parameters, in order, as the
	// controller's boot script gave them: the consoles an installed system
	// should log to as well.
	Console []string
	// LLDPWait is anvil.lldp_wait=: the most the agent waits for LLDP
	// frames before registering (0: LLDP off); nil when not given.
	LLDPWait *time.Duration
}

// Split splits a kernel command line into parameters, honouring double
// quotes the way the kernel's next_arg does.
func Split(cmdline string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case (r == ' ' || r == '\t' || r == '\n') && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// Parse extracts the anvil.* parameters; the last occurrence wins, as in the
// kernel. An anvil.* parameter it does not know is an error (a typo must not
// silently leave the agent without its controller).
func Parse(cmdline string) (Params, error) {
	var p Params
	for _, kv := range Split(cmdline) {
		k, v, _ := strings.Cut(kv, "=")
		if k == "console" && v != "" {
			p.Console = append(p.Console, kv)
		}
		if !strings.HasPrefix(k, "anvil.") {
			continue
		}
		switch k {
		case "anvil.controller":
			l, err := ctrladdr.Parse(v)
			if err != nil {
				return p, fmt.Errorf("kernel command line: anvil.controller=%q: %w", v, err)
			}
			p.Controller = l.String()
		case "anvil.token":
			p.BootToken = v
		case "anvil.ca_fp":
			p.CAFingerprint = v
		case "anvil.debug":
			p.Debug = truthy(v)
		case "anvil.lldp_wait":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return p, fmt.Errorf("kernel command line: anvil.lldp_wait=%q: want a duration such as 5s (0 turns LLDP off)", v)
			}
			p.LLDPWait = &d
		default:
			return p, fmt.Errorf("kernel command line: unknown parameter %q", k)
		}
	}
	return p, nil
}

// truthy reads a boolean parameter: present alone, or 1, true or yes.
func truthy(v string) bool { return v == "" || v == "1" || v == "true" || v == "yes" }

// FromProc parses /proc/cmdline.
func FromProc() (Params, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Params{}, fmt.Errorf("read kernel command line: %w", err)
	}
	return Parse(string(b))
}
