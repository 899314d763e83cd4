package bootenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// neededMounts are the file systems the agent relies on: procfs and sysfs
// for the inventory (ghw fails silently without sysfs), devtmpfs for the
// disks' device nodes, tmpfs on /run and /tmp for scratch files. procfs
// comes first.
func neededMounts() []mountSpec {
	return []mountSpec{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	}
}

// Prepare makes the RAM-booted machine ready for the agent: file systems,
// modules, disks, network (see the package comment). It fails on the first
// step that fails; ctx bounds the waits.
func Prepare(ctx context.Context, cfg Config, opts ...Option) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := newOptions(opts)
	res := &Result{}
	start := time.Now()

	mounted, err := mountMissing()
	if err != nil {
		return res, err
	}
	res.Mounted = mounted
	o.log.Info("file systems mounted", "mounted", mounted)

	if res.Modules, res.AlreadyLoaded, err = loadModules(cfg, o); err != nil {
		return res, err
	}
	o.log.Info("modules loaded", "modules", len(res.Modules), "already_loaded", res.AlreadyLoaded, "elapsed", time.Since(start).Round(time.Millisecond))

	if res.Disks, err = settleDisks(ctx, cfg, o, 100*time.Millisecond); err != nil {
		return res, err
	}
	o.log.Info("block devices settled", "disks", res.Disks, "elapsed", time.Since(start).Round(time.Millisecond))

	if res.Leases, err = configureNetwork(ctx, cfg, o); err != nil {
		return res, err
	}
	o.log.Info("boot environment ready", "elapsed", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// mountMissing mounts each needed file system whose mount point is not
// mounted yet. /proc comes first, since mountinfo is read from it.
func mountMissing() ([]string, error) {
	var mounted []string
	want := neededMounts()
	if _, err := os.Stat("/proc/self/mountinfo"); errors.Is(err, os.ErrNotExist) {
		if err := mount(want[0]); err != nil {
			return nil, err
		}
		mounted = append(mounted, want[0].Target)
	} else if err != nil {
		return nil, fmt.Errorf("stat /proc/self/mountinfo: %w", err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mounted, fmt.Errorf("read mounts: %w", err)
	}
	have, err := parseMountinfo(f)
	f.Close()
	if err != nil {
		return mounted, err
	}
	for _, m := range missingMounts(have, want) {
		if err := mount(m); err != nil {
			return mounted, err
		}
		mounted = append(mounted, m.Target)
	}
	return mounted, nil
}

func mount(m mountSpec) error {
	if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", m.Target, err)
	}
	if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount -t %s %s %s: %w", m.FSType, m.Source, m.Target, err)
	}
	return nil
}

// loadModules loads the order file's modules with finit_module(2). EEXIST
// means the module is already loaded (or built in under that name); ENODEV
// is a module for what this machine does not have (efivarfs on a BIOS
// machine): logged and skipped.
func loadModules(cfg Config, o options) (loaded, already []string, err error) {
	f, err := os.Open(cfg.orderPath())
	if err != nil {
		return nil, nil, fmt.Errorf("module order: %w", err)
	}
	names, err := ParseOrder(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("module order %s: %w", cfg.orderPath(), err)
	}
	for _, n := range names {
		path := filepath.Join(cfg.ModulesDir, n)
		t0 := time.Now()
		switch err := finitModule(path); {
		case errors.Is(err, unix.EEXIST):
			already = append(already, n)
		case errors.Is(err, unix.ENODEV):
			o.log.Info("module skipped: no such device on this machine", "module", n)
		case err != nil:
			return loaded, already, err
		default:
			loaded = append(loaded, n)
			o.log.Debug("module loaded", "module", n, "elapsed", time.Since(t0).Round(time.Microsecond))
		}
	}
	return loaded, already, nil
}

func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// listLinks returns the links rtnetlink reports, with whether sysfs backs
// them with a device.
func listLinks(root string) ([]linkInfo, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list network links: %w", err)
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		_, statErr := os.Stat(filepath.Join(root, "sys", "class", "net", a.Name, "device"))
		out = append(out, linkInfo{Name: a.Name, Loopback: a.Flags&net.FlagLoopback != 0, MAC: a.HardwareAddr, HasDevice: statErr == nil})
	}
	return out, nil
}

// PhysicalLinks returns the names of the machine's physical Ethernet
// links, the ones Prepare runs DHCP on, sorted.
func PhysicalLinks() ([]string, error) {
	infos, err := listLinks("/")
	if err != nil {
		return nil, err
	}
	return physicalLinks(infos), nil
}

// waitLinks waits up to cfg.LinkWait for at least one physical link.
func waitLinks(ctx context.Context, cfg Config, o options) ([]string, error) {
	deadline := time.Now().Add(cfg.LinkWait)
	for {
		infos, err := listLinks(o.root)
		if err != nil {
			return nil, err
		}
		if names := physicalLinks(infos); len(names) > 0 {
			return names, nil
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, l := range infos {
				seen = append(seen, l.Name)
			}
			return nil, fmt.Errorf("no physical network link within %v (links: %s); is the NIC driver in the initramfs?", cfg.LinkWait, strings.Join(seen, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for network links: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// configureNetwork runs DHCPv4 on every physical link, cfg.DHCPAttempts
// times at most, until at least one link has a lease, and configures the
// links that got one.
func configureNetwork(ctx context.Context, cfg Config, o options) ([]Lease, error) {
	names, err := waitLinks(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	if o.linksFound != nil {
		o.linksFound(names)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("set lo up: %w", err)
		}
	}
	var errs []error
	for attempt := 1; attempt <= cfg.DHCPAttempts; attempt++ {
		var links []netlink.Link
		for _, n := range names {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return nil, fmt.Errorf("link %s: %w", n, err)
			}
			links = append(links, l)
		}
		o.log.Info("DHCP", "links", names, "attempt", attempt)
		t0 := time.Now()
		dcfg := dhclient.Config{Timeout: cfg.DHCPTimeout, Retries: cfg.DHCPRetries, V4ClientIdentifier: true}
		var leases []Lease
		errs = errs[:0]
		for r := range dhclient.SendRequests(ctx, links, true, false, dcfg, cfg.LinkUpTimeout) {
			name := r.Interface.Attrs().Name
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("DHCPv4 on %s: %w", name, r.Err))
				continue
			}
			if err := r.Lease.Configure(); err != nil {
				return nil, fmt.Errorf("configure %s from its DHCP lease: %w", name, err)
			}
			l := describeLease(name, r.Lease, time.Since(t0))
			o.log.Info("network configured", "interface", l.Interface, "address", l.Address, "router", l.Router, "dns", l.DNS, "took", l.Duration.Round(time.Millisecond))
			leases = append(leases, l)
		}
		if len(leases) > 0 {
			return leases, nil
		}
		if len(errs) == 0 {
			errs = append(errs, fmt.Errorf("links %s did not come up within %v", strings.Join(names, ", "), cfg.LinkUpTimeout))
		}
		o.log.Warn("DHCP attempt failed", "attempt", attempt, "err", errors.Join(errs...))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("DHCP: %w", ctx.Err())
		case <-time.After(cfg.DHCPBackoff):
		}
	}
	return nil, fmt.Errorf("no DHCP lease on %s after %d attempts: %w", strings.Join(names, ", "), cfg.DHCPAttempts, errors.Join(errs...))
}

func describeLease(name string, l dhclient.Lease, took time.Duration) Lease {
	out := Lease{Interface: name, Duration: took, got: time.Now()}
	p4, ok := l.(*dhclient.Packet4)
	if !ok {
		return out
	}
	out.ack = p4.P
	if n := p4.Lease(); n != nil {
		out.Address = n.String()
	}
	if r := p4.P.Router(); len(r) > 0 {
		out.Router = r[0].String()
	}
	for _, d := range p4.P.DNS() {
		out.DNS = append(out.DNS, d.String())
	}
	return out
}

// setSystemClock steps CLOCK_REALTIME to t.
func setSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime(CLOCK_REALTIME, %s): %w", t.UTC().Format(time.RFC3339), err)
	}
	return nil
}
