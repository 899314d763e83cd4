// Package dhcp points network-booting machines at anvil's boot service. It
// answers DHCPv4 (RFC 2131, options RFC 2132) in one of two modes:
//
//   - proxy: another DHCP server stays in charge of addresses; anvil only
//     answers PXE clients (option 60 "PXEClient") with boot information,
//     as a ProxyDHCP server of the PXE 2.1 specification does (on port 67
//     and on 4011), never with an address;
//   - full: anvil leases addresses from a pool too, for an isolated
//     provisioning network such as the lab's.
//
// Boot information depends on the client (RFC 4578): a client that already
// runs iPXE (user class option 77 "iPXE") gets the HTTP URL of the chain
// script; a firmware's PXE client gets iPXE itself over TFTP, undionly.kpxe
// for BIOS or snponly.efi (iPXE on the firmware's own network driver) for
// x86-64 UEFI (option 93 architecture types 7 and 9), with the next-server
// (siaddr) and TFTP server name set; a UEFI HTTP Boot client (option 60
// "HTTPClient", architecture 16) gets iPXE's EFI image by HTTP URL, and
// option 60 "HTTPClient" back as UEFI 2.10 §24.7 asks. Every boot answer
// says "use this boot file, no boot server discovery" (PXE option 43
// discovery control 8), so no PXE client waits on port 4011.
//
// In full mode the addresses come from a LeaseBook: the store's (shared by
// every controller replica on one database, so two never hand out one
// address) or, for tests, Leases in memory.
//
// Reply is the core; Server is the UDP loop around it.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Mode says how much of DHCP anvil serves.
type Mode string

// Modes.
const (
	Proxy Mode = "proxy"
	Full  Mode = "full"
)

// Config configures the replies.
type Config struct {
	Mode Mode
	// ServerIP is this server's address on the provisioning network: the
	// server identifier and the TFTP next-server.
	ServerIP netip.Addr
	// ChainURL is the iPXE chain script's URL (boot service /ipxe/boot.ipxe).
	ChainURL string
	// BIOSFile and EFIFile are the TFTP names of iPXE for PXE clients.
	BIOSFile, EFIFile string
	// EFIHTTPURL is iPXE's EFI image by HTTP, for UEFI HTTP Boot clients;
	// empty leaves them unanswered.
	EFIHTTPURL string

	// Full mode only.
	// Pool is the range of addresses leased, both ends included.
	PoolStart, PoolEnd netip.Addr
	Netmask            netip.Addr
	Router             netip.Addr   // optional
	DNS                []netip.Addr // optional
	LeaseTime          time.Duration
}

// Defaults returns the defaults for the optional fields.
func Defaults() Config {
	return Config{Mode: Proxy, BIOSFile: "undionly.kpxe", EFIFile: "snponly.efi", LeaseTime: time.Hour}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.Mode != Proxy && c.Mode != Full {
		errs = append(errs, fmt.Errorf("mode %q: want proxy or full", c.Mode))
	}
	if !c.ServerIP.Is4() {
		errs = append(errs, fmt.Errorf("server IP %v: want an IPv4 address", c.ServerIP))
	}
	if !strings.HasPrefix(c.ChainURL, "http://") && !strings.HasPrefix(c.ChainURL, "https://") {
		errs = append(errs, fmt.Errorf("chain URL %q: want http(s)://", c.ChainURL))
	}
	if c.BIOSFile == "" || c.EFIFile == "" {
		errs = append(errs, errors.New("the iPXE file names for BIOS and EFI clients are required"))
	}
	if c.EFIHTTPURL != "" && !strings.HasPrefix(c.EFIHTTPURL, "http://") && !strings.HasPrefix(c.EFIHTTPURL, "https://") {
		errs = append(errs, fmt.Errorf("EFI HTTP URL %q: want http(s)://", c.EFIHTTPURL))
	}
	if c.Mode == Full {
		if !c.PoolStart.Is4() || !c.PoolEnd.Is4() || c.PoolEnd.Less(c.PoolStart) {
			errs = append(errs, fmt.Errorf("pool %v-%v: want two IPv4 addresses, start first", c.PoolStart, c.PoolEnd))
		}
		if !c.Netmask.Is4() {
			errs = append(errs, fmt.Errorf("netmask %v: want an IPv4 mask", c.Netmask))
		}
		if c.LeaseTime < 10*time.Second {
			errs = append(errs, fmt.Errorf("lease time %v: want at least 10 s", c.LeaseTime))
		}
		if c.PoolStart.Is4() && c.PoolEnd.Is4() && c.ServerIP.Is4() && !c.ServerIP.Less(c.PoolStart) && !c.PoolEnd.Less(c.ServerIP) {
			errs = append(errs, fmt.Errorf("server IP %v lies inside the pool", c.ServerIP))
		}
	}
	return errors.Join(errs...)
}

// Client is what a request says about the booting client.
type Client struct {
	PXE  bool // option 60 starts with "PXEClient"
	HTTP bool // option 60 starts with "HTTPClient" (UEFI HTTP Boot)
	IPXE bool // user class "iPXE"
	// Arch is the first option 93 architecture (RFC 4578 §2.1); 0 BIOS.
	Arch iana.Arch
}

// Identify reads the client's kind from its request.
func Identify(req *dhcpv4.DHCPv4) Client {
	c := Client{PXE: strings.HasPrefix(req.ClassIdentifier(), "PXEClient"), HTTP: strings.HasPrefix(req.ClassIdentifier(), "HTTPClient")}
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			c.IPXE = true
		}
	}
	if archs := req.ClientArch(); len(archs) > 0 {
		c.Arch = archs[0]
	}
	return c
}

// boots reports whether anvil answers cl with boot information.
func (c Config) boots(cl Client) bool {
	return cl.IPXE || cl.PXE || (cl.HTTP && c.EFIHTTPURL != "")
}

// bootfile is what the client should load.
func (c Config) bootfile(cl Client) (file string, tftp bool) {
	if cl.IPXE {
		return c.ChainURL, false
	}
	if cl.HTTP {
		return c.EFIHTTPURL, false
	}
	switch cl.Arch {
	case iana.EFI_X86_64, iana.EFI_BC, iana.EFI_X86_64_HTTP:
		return c.EFIFile, true
	}
	return c.BIOSFile, true
}

// LeaseBook is the full mode's address book, consulted by Reply. An
// implementation gives each MAC one address of its pool and keeps to these
// rules, whoever else (another controller on the same database) offers at
// the same time:
//
//   - one address per MAC, the same one again while its lease lives (and
//     after it lapsed, as long as nobody else took the address);
//   - a MAC's preferred address (from a hash of the MAC) when it is free,
//     so addresses survive restarts as far as possible;
//   - an address whose lease expired may go to another MAC;
//   - never one address to two MACs at once.
//
// An error (pool exhausted, database down) means no answer: Reply returns
// it and the server stays silent rather than answer wrongly.
type LeaseBook interface {
	// Pool is the range of addresses the book leases, both ends included.
	Pool() (start, end netip.Addr)
	// Offer returns the address for mac, reserved until now+ttl.
	Offer(ctx context.Context, mac string, now time.Time, ttl time.Duration) (netip.Addr, error)
	// Renew extends mac's live lease on ip to now+ttl, in one step, and
	// reports whether mac held one (false: not leased to mac, or lapsed).
	Renew(ctx context.Context, mac string, ip netip.Addr, now time.Time, ttl time.Duration) (bool, error)
	// Release ends mac's lease, if it has one.
	Release(ctx context.Context, mac string) error
}

// Leases is a LeaseBook in memory, for one process: its leases are lost
// when the process ends and no other process sees them. A controller
// serving full mode uses the store's book (sqlstore), which replicas share.
type Leases struct {
	mu         sync.Mutex
	start, end netip.Addr
	first      uint32
	size       uint32
	byMAC      map[string]lease
	byIP       map[uint32]string
}

var _ LeaseBook = (*Leases)(nil)

type lease struct {
	ip      uint32
	expires time.Time
}

// NewLeases returns an empty book for the pool [start, end].
func NewLeases(start, end netip.Addr) *Leases {
	s, e := u32(start), u32(end)
	return &Leases{start: start, end: end, first: s, size: e - s + 1, byMAC: map[string]lease{}, byIP: map[uint32]string{}}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ErrPoolExhausted is a pool with no free address.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Pool returns the book's pool.
func (l *Leases) Pool() (start, end netip.Addr) { return l.start, l.end }

// Offer returns the address for mac, reserving it until now+ttl.
func (l *Leases) Offer(_ context.Context, mac string, now time.Time, ttl time.Duration) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac]; ok {
		l.byMAC[mac] = lease{le.ip, now.Add(ttl)}
		return addr(le.ip), nil
	}
	h := fnv.New32a()
	h.Write([]byte(mac))
	first := h.Sum32() % l.size
	for i := uint32(0); i < l.size; i++ {
		ip := l.first + (first+i)%l.size
		if owner, taken := l.byIP[ip]; taken {
			if l.byMAC[owner].expires.After(now) {
				continue
			}
			delete(l.byMAC, owner) // expired: reuse
		}
		l.byIP[ip] = mac
		l.byMAC[mac] = lease{ip, now.Add(ttl)}
		return addr(ip), nil
	}
	return netip.Addr{}, fmt.Errorf("offer an address to %s: %w: %d addresses, all leased", mac, ErrPoolExhausted, l.size)
}

// Renew extends mac's live lease on ip to now+ttl.
func (l *Leases) Renew(_ context.Context, mac string, ip netip.Addr, now time.Time, ttl time.Duration) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac]
	if !ok || addr(le.ip) != ip || !le.expires.After(now) {
		return false, nil
	}
	l.byMAC[mac] = lease{le.ip, now.Add(ttl)}
	return true, nil
}

// Release ends mac's lease.
func (l *Leases) Release(_ context.Context, mac string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac]; ok {
		delete(l.byIP, le.ip)
		delete(l.byMAC, mac)
	}
	return nil
}

// ErrIgnore is a request this server does not answer (not an error on
// the client's side: another server may).
var ErrIgnore = errors.New("not answered")

// offerTTL is how long an OFFER reserves its address for the REQUEST.
const offerTTL = 2 * time.Minute

// Reply builds the answer to req, or returns ErrIgnore (wrapped with why).
// proxyPort says the request came to the PXE boot server port 4011. In
// full mode it leases from leases; any other error (the book's: pool
// exhausted, database down) means the request must go unanswered.
func Reply(ctx context.Context, c Config, leases LeaseBook, req *dhcpv4.DHCPv4, now time.Time, proxyPort bool) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, fmt.Errorf("%w: not a BOOTREQUEST", ErrIgnore)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, fmt.Errorf("%w: not an Ethernet client", ErrIgnore)
	}
	cl := Identify(req)
	mac := req.ClientHWAddr.String()
	mt := req.MessageType()
	if c.Mode == Proxy || proxyPort {
		return proxyReply(c, req, cl, mt, proxyPort)
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		ip, err := leases.Offer(ctx, mac, now, offerTTL)
		if err != nil {
			return nil, fmt.Errorf("DISCOVER from %s: %w", mac, err)
		}
		return fullReply(c, req, cl, dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		// A REQUEST names the server it chose (option 54) when it answers
		// an OFFER; one for another server is not ours to answer. Its
		// lease is left alone: the chosen server may be another replica
		// on the same lease book, ACKing this very lease; an unused
		// offer lapses after offerTTL.
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(c.ServerIP.AsSlice())) {
			return nil, fmt.Errorf("%w: %s chose server %v", ErrIgnore, mac, sid)
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr // renewing (RFC 2131 §4.3.2)
		}
		ip, ok := netip.AddrFromSlice(want.To4())
		if !ok {
			return nak(c, req)
		}
		held, err := leases.Renew(ctx, mac, ip, now, c.LeaseTime)
		if err != nil {
			return nil, fmt.Errorf("REQUEST from %s for %v: %w", mac, ip, err)
		}
		if !held {
			// An address we did not offer (or the lease lapsed): NAK, so
			// the client starts over with a DISCOVER.
			return nak(c, req)
		}
		return fullReply(c, req, cl, dhcpv4.MessageTypeAck, ip)
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		if err := leases.Release(ctx, mac); err != nil {
			return nil, fmt.Errorf("%s from %s: %w", mt, mac, err)
		}
		return nil, fmt.Errorf("%w: %s from %s", ErrIgnore, mt, mac)
	}
	return nil, fmt.Errorf("%w: message type %s", ErrIgnore, mt)
}

func serverIP(c Config) net.IP { return net.IP(c.ServerIP.AsSlice()) }

// withBoot adds the boot information for cl: the boot file, the
// next-server, and for TFTP the server's name.
func withBoot(c Config, cl Client) []dhcpv4.Modifier {
	file, tftp := c.bootfile(cl)
	mods := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptBootFileName(file)), dhcpv4.WithServerIP(serverIP(c))}
	if tftp {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptTFTPServerName(c.ServerIP.String())))
	}
	switch {
	case cl.HTTP && !cl.IPXE:
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient")))
	case cl.PXE:
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
			// PXE vendor options (option 43): PXE_DISCOVERY_CONTROL (6) = 8,
			// "use the boot file name given, no boot server discovery".
			dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	return mods
}

func fullReply(c Config, req *dhcpv4.DHCPv4, cl Client, mt dhcpv4.MessageType, ip netip.Addr) (*dhcpv4.DHCPv4, error) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithYourIP(net.IP(ip.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP(c))),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.IPMask(c.Netmask.AsSlice()))),
		dhcpv4.WithLeaseTime(uint32(c.LeaseTime / time.Second)),
		// Renewal (T1) and rebinding (T2) times, RFC 2132 §9.11-12: the
		// RFC 2131 §4.4.5 defaults, said outright.
		dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.OptionRenewTimeValue, Value: dhcpv4.Duration(c.LeaseTime / 2)}),
		dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.OptionRebindingTimeValue, Value: dhcpv4.Duration(c.LeaseTime * 7 / 8)}),
	}
	if c.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(net.IP(c.Router.AsSlice()))))
	}
	if len(c.DNS) > 0 {
		var dns []net.IP
		for _, d := range c.DNS {
			dns = append(dns, net.IP(d.AsSlice()))
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
	}
	if c.boots(cl) {
		mods = append(mods, withBoot(c, cl)...)
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

func nak(c Config, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	return dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP(c))),
		dhcpv4.WithOption(dhcpv4.OptMessage("requested address not leased by this server")))
}

// proxyReply is the ProxyDHCP answer: boot information only, to PXE
// clients only (PXE 2.1 §2.2.3: OFFER to a DISCOVER on port 67, ACK to a
// REQUEST on port 4011); a REQUEST on port 67 is the leasing server's.
func proxyReply(c Config, req *dhcpv4.DHCPv4, cl Client, mt dhcpv4.MessageType, proxyPort bool) (*dhcpv4.DHCPv4, error) {
	if !c.boots(cl) {
		return nil, fmt.Errorf("%w: proxy mode answers PXE, HTTP Boot and iPXE clients only", ErrIgnore)
	}
	var reply dhcpv4.MessageType
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		if !proxyPort {
			// A REQUEST on port 67 takes the address the leasing server
			// offered: a second ACK from here (with no address) makes
			// firmware decline its lease (seen with OVMF and dnsmasq).
			return nil, fmt.Errorf("%w: %s on port 67 belongs to the server that leases the address", ErrIgnore, mt)
		}
		reply = dhcpv4.MessageTypeAck
	default:
		return nil, fmt.Errorf("%w: message type %s in proxy mode", ErrIgnore, mt)
	}
	if !cl.HTTP {
		cl.PXE = true // the ProxyDHCP answer names itself a PXE server
	}
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(reply),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP(c))),
		dhcpv4.WithYourIP(net.IPv4zero),
	}, withBoot(c, cl)...)
	return dhcpv4.NewReplyFromRequest(req, mods...)
}
