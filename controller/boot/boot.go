// Package boot is anvil-controller's boot service over HTTP: the iPXE
// scripts that network-booting machines fetch (a chain script for DHCP to
// hand out, and a per-machine script keyed by the SMBIOS UUID and MAC that
// iPXE fills in), the agent's kernel and initramfs and the OS images (with
// Range requests, ETag and exact lengths, RFC 9110 §14 and §8.8.3), and the
// phone-home endpoint installed systems call with their allocation's token.
//
// Every endpoint answers without authentication (docs/security.md), so none
// changes a machine: a script request is only observed (the controller
// keeps a few per machine, bounded and rate limited, and quotes them in the
// machine's next authenticated event); the boot token in an agent script is
// bound to the UUID, the MAC and the client address, and good for one
// registration. The loop guard (Decide) sends a machine whose image is
// installed to its disk, in the way its firmware takes (iPXE's ${platform}:
// exit back to UEFI's next boot option, sanboot of the first BIOS drive); a
// sanboot that failed is reported by iPXE and observed. The pure parts
// (Decide, the script templates) are apart from the HTTP shell.
// DHCP and TFTP, which point machines here, live in boot/dhcp and boot/tftp.
package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/anvil-metal/anvil/agent/ctrladdr"
	"github.com/anvil-metal/anvil/controller/bootobs"
	"github.com/anvil-metal/anvil/controller/store"
)

// Machines is what the boot service needs from the controller
// (implemented by controller/server.Server).
type Machines interface {
	// BootLookup finds a machine by SMBIOS UUID, else by MAC; nil when
	// unknown.
	BootLookup(ctx context.Context, uuid, mac string) (*store.Machine, error)
	// ObserveBoot keeps an observation of a network boot; it changes no
	// machine.
	ObserveBoot(o bootobs.Observation)
	// MintBootToken returns a short-lived, single-use boot token bound to
	// the UUID, the MAC and the client address.
	MintBootToken(uuid, mac, addr string) (string, error)
	// PhoneHome verifies an installed system's token and records that it
	// booted; it returns the machine id.
	PhoneHome(ctx context.Context, token, msg string) (string, error)
}

// Config is the boot service's configuration.
type Config struct {
	// Listen is the HTTP address, e.g. ":8080".
	Listen string
	// BaseURL is how machines reach this service, e.g.
	// "http://10.0.2.2:8080"; it goes into every script.
	BaseURL string
	// AgentController is the controller's gRPC address as the agents dial
	// it (anvil.controller=): HOST:PORT, the replicas' addresses
	// comma-separated, or one DNS name with a record per replica (package
	// ctrladdr); each serving certificate must name the host agents dial.
	AgentController string
	// CAFingerprint is the "sha256:HEX" fingerprint agents pin.
	CAFingerprint string
	// Kernel and Initramfs are the agent's boot files.
	Kernel, Initramfs string
	// KernelArgs are appended to the agent's command line (console=...).
	KernelArgs string
	// ImageDir, when set, is served under /images/.
	ImageDir string
	// Files are extra files served under /files/NAME (e.g. iPXE binaries).
	Files map[string]string
}

// Defaults returns the defaults for the optional fields.
func Defaults() Config {
	return Config{Listen: ":8080", KernelArgs: "console=tty0 console=ttyS0,115200"}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if err := checkURL(c.BaseURL); err != nil {
		errs = append(errs, fmt.Errorf("base URL: %w", err))
	}
	if l, err := ctrladdr.Parse(c.AgentController); err != nil {
		errs = append(errs, fmt.Errorf("agent controller address: %w", err))
	} else if err := checkValue(l.String()); err != nil {
		errs = append(errs, fmt.Errorf("agent controller address: %w", err))
	}
	if err := checkValue(c.CAFingerprint); err != nil {
		errs = append(errs, fmt.Errorf("CA fingerprint: %w", err))
	}
	for what, p := range map[string]string{"kernel": c.Kernel, "initramfs": c.Initramfs} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("agent %s %q: not a readable file", what, p))
		}
	}
	if c.ImageDir != "" {
		if st, err := os.Stat(c.ImageDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("image dir %q: not a directory", c.ImageDir))
		}
	}
	for name := range c.Files {
		if name == "" || name != filepath.Base(name) || name == agentKernel || name == agentInitramfs {
			errs = append(errs, fmt.Errorf("file name %q: want a plain name other than %s and %s", name, agentKernel, agentInitramfs))
		}
	}

	return errors.Join(errs...)
}

// Names of the agent's boot files under /files/.
const (
	agentKernel    = "agent-kernel"
	agentInitramfs = "agent-initramfs"
)

// Service serves the boot endpoints.
type Service struct {
	cfg   Config
	m     Machines
	log   *slog.Logger
	files map[string]string
	now   func() time.Time
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithClock sets the time source (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New checks cfg and builds the service.
func New(cfg Config, m Machines, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("boot service: %w", err)
	}
	s := &Service{cfg: cfg, m: m, log: slog.Default(), now: time.Now,
		files: map[string]string{agentKernel: cfg.Kernel, agentInitramfs: cfg.Initramfs}}
	for n, p := range cfg.Files {
		s.files[n] = p
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Handler returns the HTTP routes.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ipxe/boot.ipxe", s.chain)
	mux.HandleFunc("GET /ipxe/script", s.script)
	mux.HandleFunc("GET /files/{name}", s.file)
	mux.HandleFunc("GET /images/{name...}", s.image)
	mux.HandleFunc("POST /phone-home", s.phoneHome)
	return mux
}

// ChainURL is the URL DHCP hands to iPXE clients.
func (s *Service) ChainURL() string { return s.cfg.BaseURL + "/ipxe/boot.ipxe" }

// FileURL is the URL of a file served under /files/, "" when the service
// has no file of that name.
func (s *Service) FileURL(name string) string {
	if _, ok := s.files[name]; !ok {
		return ""
	}
	return s.url("/files/"+name, nil)
}

// url joins the base URL and a path with a query.
func (s *Service) url(path string, q url.Values) string {
	u := s.cfg.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}
