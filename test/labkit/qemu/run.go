package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// VM is a QEMU process started by Start.
type VM struct {
	// Console is the serial console's file.
	Console string
	// Started is when the process started.
	Started time.Time
	cmd     *exec.Cmd
	out     *bytes.Buffer // QEMU's own messages (and the console when it goes to stdout)

	done chan struct{}
	mu   sync.Mutex
	err  error
}

// Start runs the VM o describes; o.Console is required (tests read it).
func Start(o Options) (*VM, error) {
	if o.Console == "" {
		return nil, fmt.Errorf("VM %s: a console file is required", o.Name)
	}
	args, err := o.Command()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.Console, nil, 0o644); err != nil {
		return nil, fmt.Errorf("console of VM %s: %w", o.Name, err)
	}
	v := &VM{Console: o.Console, out: &bytes.Buffer{}, done: make(chan struct{})}
	v.cmd = exec.Command(args[0], args[1:]...)
	v.cmd.Stdout, v.cmd.Stderr = &lockedWriter{mu: &v.mu, b: v.out}, &lockedWriter{mu: &v.mu, b: v.out}
	v.Started = time.Now()
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start QEMU (%s; hack/install-deps.sh installs it): %w", Binary, err)
	}
	go func() {
		err := v.cmd.Wait()
		v.mu.Lock()
		v.err = err
		v.mu.Unlock()
		close(v.done)
	}()
	return v, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Exited is closed when the process has ended.
func (v *VM) Exited() <-chan struct{} { return v.done }

// Err is how the process ended (nil while it runs or after a clean exit).
func (v *VM) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// Output is what QEMU itself printed.
func (v *VM) Output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// Kill ends the process (a pulled plug) and waits for it.
func (v *VM) Kill() {
	select {
	case <-v.done:
		return
	default:
	}
	v.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile; Wait reaps it either way
	<-v.done
}

// ConsoleText is the serial console so far.
func (v *VM) ConsoleText() string {
	b, err := os.ReadFile(v.Console)
	if err != nil {
		return fmt.Sprintf("(console unreadable: %v)", err)
	}
	return string(b)
}

// WaitConsole waits until the console matches re, returning the match; it
// fails when QEMU exits or ctx ends first.
func (v *VM) WaitConsole(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		if m := re.FindStringSubmatch(v.ConsoleText()); m != nil {
			return m, nil
		}
		select {
		case <-v.done:
			if m := re.FindStringSubmatch(v.ConsoleText()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("QEMU exited (%v) before the console showed %q: %s", v.Err(), re, strings.TrimSpace(v.Output()))
		case <-ctx.Done():
			return nil, fmt.Errorf("console did not show %q: %w", re, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StartT starts the VM for a test: it is killed when the test ends, and
// its console's tail is logged when the test failed.
func StartT(t testing.TB, o Options) *VM {
	t.Helper()
	v, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.Kill()
		if t.Failed() {
			t.Logf("serial console of %s (%s):\n%s\nQEMU: %s", o.Name, v.Console, Tail(v.ConsoleText(), 6000), strings.TrimSpace(v.Output()))
		}
	})
	return v
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
