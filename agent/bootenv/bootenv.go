// Package bootenv prepares a machine that booted anvil-agent from RAM (the
// u-root initramfs, agent in --mode boot) for the agent's loop:
//
//  1. it mounts the kernel file systems the agent needs that are not mounted
//     yet (u-root's init mounts /proc, /sys, /dev and /tmp but not /run);
//  2. it loads the kernel modules listed in the initramfs's order file with
//     finit_module(2), in that order (initramfs/modorder writes it sorted by
//     each module's modinfo depends=); a module already loaded is fine;
//  3. it waits until the block devices stop appearing (there is no udev to
//     say when probing is over), so the inventory sees every disk;
//  4. it names the physical network links to the caller once they exist
//     ([WithLinksFound]), brings them up with rtnetlink and configures
//     them by DHCPv4 (RFC 2131, u-root's pkg/dhclient): address, routes
//     (classless static routes, RFC 3442, or the router option) and
//     resolv.conf.
//
// [SeedClock] then makes the clock plausible for TLS (RFC 5280 validity)
// from the controller's own certificate chain. Syscalls live in the
// *_linux.go files; the parsers and policies here build and test anywhere.
package bootenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DebugShellPath is where the initramfs keeps its shell (u-root's gosh;
// initramfs.DebugShell).
const DebugShellPath = "/bbin/gosh"

// ErrUnsupported is returned by Prepare on systems other than Linux.
var ErrUnsupported = errors.New("boot environment preparation is only supported on Linux")

// Config says where the initramfs keeps its modules and how patient the
// preparation is. Zero fields are taken from Defaults.
type Config struct {
	// ModulesDir holds the .ko files the initramfs carries. They are kept
	// out of /lib/modules, where u-root's init would load them
	// alphabetically and fail on unknown symbols.
	ModulesDir string
	// OrderFile lists ModulesDir's modules in load order, one file name a
	// line ('#' starts a comment). Relative paths are below ModulesDir.
	OrderFile string
	// SettleQuiet is how long /sys/block must stay unchanged before the
	// disks count as probed; SettleTimeout caps the wait.
	SettleQuiet, SettleTimeout time.Duration
	// LinkWait is how long to wait for a physical network link to appear
	// once the modules are loaded; LinkUpTimeout how long a link may take
	// to come up.
	LinkWait, LinkUpTimeout time.Duration
	// DHCPTimeout is one DHCP exchange's timeout and DHCPRetries how often
	// the client retransmits within an attempt; DHCPAttempts is how many
	// attempts over all links are made, DHCPBackoff apart, before Prepare
	// fails.
	DHCPTimeout  time.Duration
	DHCPRetries  int
	DHCPAttempts int
	DHCPBackoff  time.Duration
}

// Defaults returns the settings for the agent initramfs.
func Defaults() Config {
	return Config{
		ModulesDir:    "/lib/anvil/modules",
		OrderFile:     "order",
		SettleQuiet:   500 * time.Millisecond,
		SettleTimeout: 10 * time.Second,
		LinkWait:      10 * time.Second,
		LinkUpTimeout: 10 * time.Second,
		DHCPTimeout:   5 * time.Second,
		DHCPRetries:   2,
		DHCPAttempts:  10,
		DHCPBackoff:   2 * time.Second,
	}
}

// withDefaults fills zero fields from Defaults.
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.ModulesDir == "" {
		c.ModulesDir = d.ModulesDir
	}
	if c.OrderFile == "" {
		c.OrderFile = d.OrderFile
	}
	for _, f := range []struct{ v, d *time.Duration }{
		{&c.SettleQuiet, &d.SettleQuiet}, {&c.SettleTimeout, &d.SettleTimeout}, {&c.LinkWait, &d.LinkWait},
		{&c.LinkUpTimeout, &d.LinkUpTimeout}, {&c.DHCPTimeout, &d.DHCPTimeout}, {&c.DHCPBackoff, &d.DHCPBackoff},
	} {
		if *f.v == 0 {
			*f.v = *f.d
		}
	}
	if c.DHCPAttempts == 0 {
		c.DHCPAttempts = d.DHCPAttempts
	}
	return c
}

// Validate reports every problem of c after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if !filepath.IsAbs(c.ModulesDir) {
		errs = append(errs, fmt.Errorf("modules directory %q is not absolute", c.ModulesDir))
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"settle quiet time", c.SettleQuiet}, {"settle timeout", c.SettleTimeout}, {"link wait", c.LinkWait},
		{"link up timeout", c.LinkUpTimeout}, {"DHCP timeout", c.DHCPTimeout}, {"DHCP backoff", c.DHCPBackoff}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", f.name, f.v))
		}
	}
	if c.SettleQuiet > c.SettleTimeout {
		errs = append(errs, fmt.Errorf("settle quiet time %v exceeds the settle timeout %v", c.SettleQuiet, c.SettleTimeout))
	}
	if c.DHCPRetries < 0 {
		errs = append(errs, fmt.Errorf("DHCP retries %d is negative", c.DHCPRetries))
	}
	if c.DHCPAttempts < 1 {
		errs = append(errs, fmt.Errorf("DHCP attempts %d: want at least 1", c.DHCPAttempts))
	}
	return errors.Join(errs...)
}

// orderPath is the order file's path.
func (c Config) orderPath() string {
	if filepath.IsAbs(c.OrderFile) {
		return c.OrderFile
	}
	return filepath.Join(c.ModulesDir, c.OrderFile)
}

// Option configures Prepare and SeedClock.
type Option func(*options)

type options struct {
	log      *slog.Logger
	root     string
	now      func() time.Time
	setClock func(time.Time) error
	// linksFound is told the physical links once they exist, before DHCP
	// brings them up.
	linksFound func([]string)
}

func newOptions(opts []Option) options {
	o := options{log: slog.New(slog.DiscardHandler), root: "/", now: time.Now, setClock: setSystemClock}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock replaces the system clock SeedClock reads and steps (a test
// seam; the default reads time.Now and sets CLOCK_REALTIME).
func WithClock(now func() time.Time, set func(time.Time) error) Option {
	return func(o *options) { o.now, o.setClock = now, set }
}

// WithLinksFound has Prepare call fn with the physical links' names as
// soon as they exist, before DHCP brings them up: the agent starts
// listening for its switches' LLDP frames there, since a switch sends one
// as soon as its port's link comes up.
func WithLinksFound(fn func(links []string)) Option {
	return func(o *options) { o.linksFound = fn }
}

// withRoot makes the sysfs readers read below root (tests).
func withRoot(root string) Option { return func(o *options) { o.root = root } }

// Result describes what Prepare did.
type Result struct {
	// Mounted are the mount points Prepare mounted.
	Mounted []string
	// Modules are the modules loaded, in order; AlreadyLoaded those the
	// kernel already had.
	Modules, AlreadyLoaded []string
	// Disks are the block devices seen once probing settled.
	Disks []string
	// Leases are the configured interfaces.
	Leases []Lease
}

// Lease is one interface's DHCP configuration.
type Lease struct {
	Interface string
	Address   string // CIDR
	Router    string // empty when none
	DNS       []string
	Duration  time.Duration // how long the lease took to get
	// ack is the server's answer, which KeepLeases renews.
	ack *dhcpv4.DHCPv4
	got time.Time
}

// LeaseTimes are when a lease must be renewed from its server (T1) and
// from any server (T2, rebinding), and when it expires.
type LeaseTimes struct {
	Renew, Rebind, Expire time.Time
}

// TimesOf computes a lease's times from when it was granted (RFC 2131
// §4.4.5): the lease time (option 51), the server's renewal (58) and
// rebinding (59) times when it gives them and they are in order, else half
// and seven eighths of the lease. A lease without a time (infinite) never
// needs renewing: zero times.
func TimesOf(granted time.Time, lease, t1, t2 time.Duration) LeaseTimes {
	if lease <= 0 {
		return LeaseTimes{}
	}
	if t1 <= 0 || t1 >= lease {
		t1 = lease / 2
	}
	if t2 <= t1 || t2 >= lease {
		t2 = lease * 7 / 8
	}
	return LeaseTimes{Renew: granted.Add(t1), Rebind: granted.Add(t2), Expire: granted.Add(lease)}
}

// RetryIn is how long to wait before asking again after a failed renewal
// at now: half the time left to the next deadline (rebinding, else
// expiry), at least 5 seconds and at most a minute (RFC 2131 §4.4.5 asks
// for half the remaining time, down to 60 s).
func (lt LeaseTimes) RetryIn(now time.Time) time.Duration {
	next := lt.Rebind
	if !now.Before(next) {
		next = lt.Expire
	}
	d := next.Sub(now) / 2
	return min(max(d, 5*time.Second), time.Minute)
}

// ParseOrder reads an order file: module file names (relative to the
// modules directory), one a line; blank lines and '#' comments are skipped.
// A name with a path separator or a repeated name is an error.
func ParseOrder(r io.Reader) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			continue
		case strings.ContainsRune(line, '/') || line == "." || line == "..":
			return nil, fmt.Errorf("order line %d: %q is not a file name in the modules directory", n, line)
		case !strings.HasSuffix(line, ".ko"):
			return nil, fmt.Errorf("order line %d: %q is not an uncompressed module (.ko)", n, line)
		case seen[line]:
			return nil, fmt.Errorf("order line %d: %q is listed twice", n, line)
		}
		seen[line] = true
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read order file: %w", err)
	}
	return out, nil
}

// mountSpec is one file system the agent needs.
type mountSpec struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// mountPoint is one entry of /proc/self/mountinfo.
type mountPoint struct {
	Target, FSType string
}

// parseMountinfo reads /proc/self/mountinfo (proc(5)): the fifth field is
// the mount point (octal escapes for space, tab, newline and backslash), the
// file system type follows the " - " separator.
func parseMountinfo(r io.Reader) ([]mountPoint, error) {
	var out []mountPoint
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			return nil, fmt.Errorf("mountinfo line %q: want at least 5 fields and a \" - \" separator", line)
		}
		target, err := unescapeOctal(f[4])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %q: %w", line, err)
		}
		var fstype string
		if pf := strings.Fields(post); len(pf) > 0 {
			fstype = pf[0]
		}
		out = append(out, mountPoint{Target: target, FSType: fstype})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \ooo escapes in mountinfo paths.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q: %w", s, err)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// missingMounts returns the specs whose target is not a mount point yet, in
// the order of want. An existing mount of another type is not replaced.
func missingMounts(have []mountPoint, want []mountSpec) []mountSpec {
	var out []mountSpec
	for _, w := range want {
		if !slices.ContainsFunc(have, func(m mountPoint) bool { return filepath.Clean(m.Target) == filepath.Clean(w.Target) }) {
			out = append(out, w)
		}
	}
	return out
}

// linkInfo is what the link choice needs to know about a network link.
type linkInfo struct {
	Name     string
	Loopback bool
	MAC      net.HardwareAddr
	// HasDevice is true when the link is backed by a device in sysfs
	// (/sys/class/net/NAME/device): a NIC, not a bridge, bond or tunnel.
	HasDevice bool
}

// physicalLinks returns the names of the links DHCP runs on: Ethernet
// links backed by a device, sorted by name.
func physicalLinks(links []linkInfo) []string {
	var out []string
	for _, l := range links {
		if l.Loopback || !l.HasDevice || len(l.MAC) != 6 {
			continue
		}
		out = append(out, l.Name)
	}
	slices.Sort(out)
	return out
}

// settler decides when device probing is over: when the observed set has
// not changed for quiet.
type settler struct {
	quiet   time.Duration
	last    []string
	changed time.Time
}

// observe records the set seen at now and reports whether it has been
// stable for the quiet time.
func (s *settler) observe(now time.Time, seen []string) bool {
	seen = slices.Clone(seen)
	slices.Sort(seen)
	if s.changed.IsZero() || !slices.Equal(seen, s.last) {
		s.last, s.changed = seen, now
		return s.quiet <= 0
	}
	return now.Sub(s.changed) >= s.quiet
}
