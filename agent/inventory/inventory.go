package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jaypipes/ghw"
	"github.com/jaypipes/ghw/pkg/snapshot"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Sentinel errors returned (wrapped) by [Collect]; check them with errors.Is.
var (
	// ErrNoSysfs means sysfs is not mounted under the root. ghw would
	// silently report an empty machine.
	ErrNoSysfs = errors.New("sysfs not available")
	// ErrNoProcfs means /proc/cpuinfo or /proc/meminfo is missing under the
	// root. ghw would silently report no CPUs.
	ErrNoProcfs = errors.New("procfs not available")
	// ErrNoUUID means the machine has no valid SMBIOS system UUID, so it
	// has no identity.
	ErrNoUUID = errors.New("no valid SMBIOS system UUID")
	// ErrNoCPU means no online CPU was found.
	ErrNoCPU = errors.New("no CPU found")
)

// Option configures [Collect].
type Option func(*config)

type config struct {
	root        string
	snapshot    string
	logger      *slog.Logger
	pcidb       string
	netlink     *bool
	loops       bool
	requireUUID bool
}

// WithRoot reads the machine from dir instead of "/": dir must hold sys/ and
// proc/ (and may hold run/ and usr/share/ for pci.ids) laid out like a Linux
// root, for example a bind mount of the host or a fixture tree.
func WithRoot(dir string) Option {
	return func(c *config) { c.root = dir }
}

// WithSnapshot reads the machine from a ghw snapshot (a .tar.gz made by
// ghw's snapshot package). It is unpacked into a temporary directory that is
// removed before Collect returns. It cannot be combined with [WithRoot].
func WithSnapshot(path string) Option {
	return func(c *config) { c.snapshot = path }
}

// WithLogger sets the logger. ghw's own messages are logged at debug level
// with component=ghw. By default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithPCIDB names the pci.ids database used for PCI vendor, product and
// class names. Without it Collect looks at $PCIDB_PATH, then at
// usr/share/misc/pci.ids and usr/share/hwdata/pci.ids (or .gz) under the
// root. When none is readable, PCI devices and GPUs carry ids only.
func WithPCIDB(path string) Option {
	return func(c *config) { c.pcidb = path }
}

// WithNetlink selects whether link state, MTU and the permanent MAC address
// are read from rtnetlink in addition to sysfs. It defaults to true on the
// live machine and to false with [WithRoot] or [WithSnapshot], whose NICs
// are not the running kernel's.
func WithNetlink(enabled bool) Option {
	return func(c *config) { c.netlink = &enabled }
}

// WithLoopDevices selects whether loop devices that have a backing file are
// reported (default true; the agent is tested on them), with kind
// "virtual" like every loop device. Loop devices without a backing file are
// never reported.
func WithLoopDevices(enabled bool) Option {
	return func(c *config) { c.loops = enabled }
}

// WithRequireUUID selects whether a missing or invalid SMBIOS system UUID is
// an error wrapping [ErrNoUUID] (default true: the UUID is the machine's
// identity). Diagnostics and tests on snapshots without DMI data turn it
// off; the product UUID is then left empty.
func WithRequireUUID(required bool) Option {
	return func(c *config) { c.requireUUID = required }
}

// collector holds the state of one Collect call.
type collector struct {
	root    string
	log     *slog.Logger
	ghwArgs []any
	cfg     config
}

// Collect reads the hardware inventory. The result is deterministic for a
// given machine: disks and NICs are sorted by name, PCI devices and GPUs by
// address. Every block device is reported with its kind (see [BlockKind]):
// device-mapper, MD RAID, nbd and loop devices as "virtual", CD/DVD drives
// (a BMC's virtual media too) as "optical", physical disks and LUNs as
// "disk"; RAM disks, zram and loop devices without a backing file are left
// out.
func Collect(ctx context.Context, opts ...Option) (*anvilv1.Inventory, error) {
	cfg := config{loops: true, requireUUID: true}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.root != "" && cfg.snapshot != "" {
		return nil, errors.New("inventory: WithRoot and WithSnapshot are mutually exclusive")
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.netlink == nil {
		live := cfg.root == "" && cfg.snapshot == ""
		cfg.netlink = &live
	}
	root := "/"
	if cfg.root != "" {
		root = cfg.root
	}
	if cfg.snapshot != "" {
		dir, err := os.MkdirTemp("", "anvil-inventory-*")
		if err != nil {
			return nil, fmt.Errorf("inventory: unpacking snapshot %s: %w", cfg.snapshot, err)
		}
		defer func() {
			if err := os.RemoveAll(dir); err != nil {
				cfg.logger.Warn("removing unpacked snapshot", "dir", dir, "err", err)
			}
		}()
		if err := snapshot.UnpackInto(cfg.snapshot, dir); err != nil {
			return nil, fmt.Errorf("inventory: unpacking snapshot %s: %w", cfg.snapshot, err)
		}
		root = dir
	}
	c := &collector{
		root: root,
		log:  cfg.logger,
		cfg:  cfg,
		ghwArgs: []any{
			ghw.WithChroot(root),
			// Never exec ethtool: speed and duplex come from sysfs.
			ghw.WithDisableTools(),
			ghw.WithLogger(slog.New(ghwLogHandler{cfg.logger.With("component", "ghw").Handler()})),
		},
	}
	inv, err := c.collect(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory of %s: %w", c.describe(), err)
	}
	return inv, nil
}

func (c *collector) describe() string {
	if c.cfg.snapshot != "" {
		return "snapshot " + c.cfg.snapshot
	}
	return c.root
}

func (c *collector) collect(ctx context.Context) (*anvilv1.Inventory, error) {
	if err := checkFilesystems(c.root); err != nil {
		return nil, err
	}
	inv := &anvilv1.Inventory{}
	steps := []struct {
		what string
		fn   func(*anvilv1.Inventory) error
	}{
		{"SMBIOS system", c.product},
		{"BIOS", c.bios},
		{"baseboard", c.baseboard},
		{"chassis", c.chassis},
		{"CPU", c.cpu},
		{"memory", c.memory},
		{"disks", c.disks},
		{"NICs", c.nics},
		{"PCI devices and GPUs", c.pciAndGPUs},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.fn(inv); err != nil {
			return nil, fmt.Errorf("reading %s: %w", s.what, err)
		}
	}
	return inv, nil
}

// checkFilesystems fails when sysfs or procfs is missing under root, which
// ghw would report as an empty machine instead of an error.
func checkFilesystems(root string) error {
	for _, p := range []string{"sys/block", "sys/devices"} {
		path := filepath.Join(root, p)
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNoSysfs, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrNoSysfs, path)
		}
	}
	for _, p := range []string{"proc/cpuinfo", "proc/meminfo"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			return fmt.Errorf("%w: %w", ErrNoProcfs, err)
		}
	}
	return nil
}

func (c *collector) product(inv *anvilv1.Inventory) error {
	p, err := ghw.Product(c.ghwArgs...)
	if err != nil {
		return err
	}
	inv.Product = &anvilv1.Product{
		Vendor:  known(p.Vendor),
		Name:    known(p.Name),
		Serial:  known(p.SerialNumber),
		Sku:     known(p.SKU),
		Family:  known(p.Family),
		Version: known(p.Version),
	}
	uuid, uerr := canonicalUUID(p.UUID)
	if uerr != nil {
		c.log.Debug("ghw returned no valid system UUID, reading sysfs", "ghw_uuid", p.UUID, "err", uerr)
		uuid, uerr = productUUIDFromSysfs(c.root)
	}
	if uerr != nil {
		if c.cfg.requireUUID {
			return fmt.Errorf("%w: %w", ErrNoUUID, uerr)
		}
		c.log.Warn("machine has no valid SMBIOS system UUID", "err", uerr)
		uuid = ""
	}
	inv.Product.Uuid = uuid
	return nil
}

func (c *collector) bios(inv *anvilv1.Inventory) error {
	b, err := ghw.BIOS(c.ghwArgs...)
	if err != nil {
		return err
	}
	inv.Bios = &anvilv1.BIOS{Vendor: known(b.Vendor), Version: known(b.Version), Date: known(b.Date)}
	return nil
}

func (c *collector) baseboard(inv *anvilv1.Inventory) error {
	b, err := ghw.Baseboard(c.ghwArgs...)
	if err != nil {
		return err
	}
	inv.Baseboard = &anvilv1.Baseboard{
		Vendor:   known(b.Vendor),
		Product:  known(b.Product),
		Serial:   known(b.SerialNumber),
		Version:  known(b.Version),
		AssetTag: known(b.AssetTag),
	}
	return nil
}

func (c *collector) chassis(inv *anvilv1.Inventory) error {
	ch, err := ghw.Chassis(c.ghwArgs...)
	if err != nil {
		return err
	}
	typ := known(ch.TypeDescription)
	if typ == "" {
		typ = known(ch.Type)
	}
	inv.Chassis = &anvilv1.Chassis{
		Vendor:   known(ch.Vendor),
		Type:     typ,
		Serial:   known(ch.SerialNumber),
		Version:  known(ch.Version),
		AssetTag: known(ch.AssetTag),
	}
	return nil
}

func (c *collector) cpu(inv *anvilv1.Inventory) error {
	info, err := ghw.CPU(c.ghwArgs...)
	if err != nil {
		return err
	}
	if info.TotalHardwareThreads == 0 {
		return fmt.Errorf("%w under %s (procfs or sysfs incomplete)", ErrNoCPU, filepath.Join(c.root, "sys/devices/system/cpu"))
	}
	out := &anvilv1.CPU{
		Sockets: uint32(len(info.Processors)),
		Cores:   info.TotalCores,
		Threads: info.TotalHardwareThreads,
	}
	for _, p := range info.Processors {
		if out.Vendor == "" {
			out.Vendor = known(p.Vendor)
		}
		if out.Model == "" {
			out.Model = known(p.Model)
		}
	}
	inv.Cpu = out
	return nil
}

func (c *collector) memory(inv *anvilv1.Inventory) error {
	m, err := ghw.Memory(c.ghwArgs...)
	if err != nil {
		return err
	}
	inv.Memory = &anvilv1.Memory{
		TotalBytes:  uint64(max(m.TotalPhysicalBytes, 0)),
		UsableBytes: uint64(max(m.TotalUsableBytes, 0)),
	}
	return nil
}

// skipDisk reports whether a block device is never a disk of the machine.
func skipDisk(name string) bool {
	return strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram")
}

func (c *collector) disks(inv *anvilv1.Inventory) error {
	info, err := ghw.Block(c.ghwArgs...)
	if err != nil {
		return err
	}
	for _, d := range info.Disks {
		if skipDisk(d.Name) {
			continue
		}
		if strings.HasPrefix(d.Name, "loop") {
			backing, err := loopBackingFile(c.root, d.Name)
			if err != nil {
				return err
			}
			if backing == "" || !c.cfg.loops {
				c.log.Debug("skipping loop device", "disk", d.Name, "backing_file", backing)
				continue
			}
		}
		sys, err := diskFromSysfs(c.root, d.Name)
		if err != nil {
			return err
		}
		disk := &anvilv1.Disk{
			Name:              d.Name,
			Path:              "/dev/" + d.Name,
			Vendor:            known(d.Vendor),
			Model:             known(d.Model),
			Serial:            known(d.SerialNumber),
			Wwn:               known(d.WWN),
			SizeBytes:         d.SizeBytes,
			Removable:         d.IsRemovable,
			PhysicalBlockSize: uint32(d.PhysicalBlockSizeBytes),
			LogicalBlockSize:  uint32(d.LogicalBlockSizeBytes),
			BusPath:           known(d.BusPath),
			// ghw derives these from the name only (every sd* is
			// "SCSI", every vd* an HDD): sysfs knows better.
			Controller: sys.Controller,
			Rotational: sys.Rotational,
			Kind:       sys.Kind,
		}
		if sys.Controller == controllerVirtio {
			// ghw reads device/vendor, which for virtio-blk is the
			// virtio vendor id (0x1af4), not a disk vendor.
			disk.Vendor = ""
		}
		fillDisk(disk, sys)
		inv.Disks = append(inv.Disks, disk)
	}
	slices.SortFunc(inv.Disks, func(a, b *anvilv1.Disk) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

// fillDisk sets the fields of d that ghw left empty from sysfs.
func fillDisk(d, sys *anvilv1.Disk) {
	fill(&d.Vendor, sys.Vendor)
	fill(&d.Model, sys.Model)
	fill(&d.Serial, sys.Serial)
	fill(&d.Wwn, sys.Wwn)
	fill(&d.BusPath, sys.BusPath)
	if d.SizeBytes == 0 {
		d.SizeBytes = sys.SizeBytes
	}
	if d.PhysicalBlockSize == 0 {
		d.PhysicalBlockSize = sys.PhysicalBlockSize
	}
	if d.LogicalBlockSize == 0 {
		d.LogicalBlockSize = sys.LogicalBlockSize
	}
	d.Removable = d.Removable || sys.Removable
}

func (c *collector) nics(inv *anvilv1.Inventory) error {
	info, err := ghw.Network(c.ghwArgs...)
	if err != nil {
		return err
	}
	for _, n := range info.NICs {
		sys, err := nicFromSysfs(c.root, n.Name)
		if err != nil {
			return err
		}
		nic := &anvilv1.NIC{
			Name:    n.Name,
			Mac:     strings.ToLower(n.MACAddress),
			Virtual: n.IsVirtual,
			// ghw reads neither the driver nor the MTU nor the link
			// state, and parses no speed without ethtool.
			Driver:    sys.Driver,
			SpeedMbps: sys.SpeedMbps,
			LinkUp:    sys.LinkUp,
			Mtu:       sys.Mtu,
		}
		if n.PCIAddress != nil {
			nic.PciAddress = *n.PCIAddress
		}
		fill(&nic.Mac, sys.Mac)
		// ghw finds the PCI address only when the netdev's parent is the
		// PCI function itself, not for virtio-net.
		fill(&nic.PciAddress, sys.PciAddress)
		if *c.cfg.netlink {
			st, err := netlinkLinkState(n.Name)
			if err != nil {
				c.log.Warn("reading link state over netlink; keeping sysfs state", "nic", n.Name, "err", err)
			} else {
				nic.LinkUp = st.up
				if st.mtu > 0 {
					nic.Mtu = st.mtu
				}
				if !nic.Virtual {
					fill(&nic.Mac, st.permMAC)
				}
			}
		}
		inv.Nics = append(inv.Nics, nic)
	}
	slices.SortFunc(inv.Nics, func(a, b *anvilv1.NIC) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

func (c *collector) pciAndGPUs(inv *anvilv1.Inventory) error {
	sysDevs, err := pciDevicesFromSysfs(c.root)
	if err != nil {
		return err
	}
	db := c.loadPCIDB()
	args := c.ghwArgs
	if db != nil {
		args = append(slices.Clip(args), ghw.WithPCIDB(db), ghw.WithDisableTopology())
	}

	devs := sysDevs
	if db != nil {
		named := false
		info, err := ghw.PCI(args...)
		switch {
		case err != nil:
			c.log.Warn("ghw PCI failed; naming sysfs devices from pci.ids", "err", err)
		case len(info.Devices) < len(sysDevs):
			// ghw drops the whole list when one device has no modalias.
			c.log.Warn("ghw PCI missed devices; naming sysfs devices from pci.ids",
				"ghw", len(info.Devices), "sysfs", len(sysDevs))
		default:
			devs, named = pciDevicesFromGHW(info.Devices), true
		}
		if !named {
			for _, d := range devs {
				nameFromPCIDB(d, db)
			}
		}
	}
	slices.SortFunc(devs, func(a, b *anvilv1.PCIDevice) int { return strings.Compare(a.Address, b.Address) })
	inv.PciDevices = devs

	byAddr := make(map[string]*anvilv1.PCIDevice, len(devs))
	for _, d := range devs {
		byAddr[d.Address] = d
	}
	seen := map[string]bool{}
	if db != nil {
		// ghw's GPU reader needs a PCI database: without one, ghw.GPU
		// would try to load (or even download) its own.
		info, err := ghw.GPU(args...)
		if err != nil {
			c.log.Warn("ghw GPU failed; deriving GPUs from PCI class 0x03", "err", err)
		} else {
			for _, card := range info.GraphicsCards {
				if seen[card.Address] {
					continue
				}
				seen[card.Address] = true
				g := &anvilv1.GPU{Address: card.Address}
				if di := card.DeviceInfo; di != nil {
					g.Driver = di.Driver
					if di.Vendor != nil {
						g.Vendor = known(di.Vendor.Name)
					}
					if di.Product != nil {
						g.Model = known(di.Product.Name)
					}
				}
				if p := byAddr[card.Address]; p != nil {
					fillGPU(g, p)
				}
				inv.Gpus = append(inv.Gpus, g)
			}
		}
	}
	// Display controllers that have no DRM card (no driver bound, or a
	// driver without DRM) and every GPU when ghw could not run.
	for _, p := range devs {
		if !strings.HasPrefix(p.ClassId, pciClassDisplay) || seen[p.Address] {
			continue
		}
		g := &anvilv1.GPU{Address: p.Address}
		fillGPU(g, p)
		inv.Gpus = append(inv.Gpus, g)
	}
	slices.SortFunc(inv.Gpus, func(a, b *anvilv1.GPU) int { return strings.Compare(a.Address, b.Address) })
	return nil
}

// fillGPU sets the empty fields of g from its PCI function. Without names
// (no pci.ids) the vendor and model are the hex PCI ids, so that the GPU
// stays identifiable.
func fillGPU(g *anvilv1.GPU, p *anvilv1.PCIDevice) {
	fill(&g.Vendor, p.Vendor)
	fill(&g.Vendor, p.VendorId)
	fill(&g.Model, p.Product)
	fill(&g.Model, p.ProductId)
	fill(&g.Driver, p.Driver)
}

// fill sets *dst to v when *dst is empty.
func fill(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// known maps ghw's "unknown" placeholder (and surrounding blanks) to "".
func known(s string) string {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unknown") {
		return ""
	}
	return s
}

// isNotExist reports whether err means a sysfs attribute is absent.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}
