// Package seed writes a cloud-init NoCloud seed onto an installed disk, so
// stock cloud images configure themselves on first boot without any
// change: a 64 MiB FAT32 partition at the disk's end, GPT partition name
// "cidata", filesystem label "CIDATA" (the label cloud-init's NoCloud
// datasource and ds-identify look for), holding
//
//   - meta-data: instance-id (unique per install) and local-hostname;
//   - user-data: the operator's user-data as given; without it a minimal
//     #cloud-config with hostname and ssh_authorized_keys; with both, a
//     MIME multi-part archive (cloud-init's "MIME multi-part archive"
//     user-data format) whose first part is the operator's, byte for byte,
//     and whose second is anvil's cloud-config, merged with merge_how so
//     it adds SSH keys and never replaces what the operator set;
//   - network-config: network configuration version 2, DHCPv4 on every
//     NIC of the machine's inventory, matched by MAC address (names
//     change with kernels, slots and firmware; a MAC does not), or on
//     every ethernet NIC matched by name (en*, eth*) when no MAC is known;
//   - anvil/phone-home.json: {"url": ..., "token": ...}, which the
//     installed system's phone-home unit reads to report that it booted.
//
// This file is the pure core: the files' contents and the partition's
// place. disk_linux.go writes them to a disk.
package seed

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"gopkg.in/yaml.v3"
)

// The seed partition.
const (
	// PartName is the GPT partition name; a partition of this name is the
	// seed and is replaced on every install.
	PartName = "cidata"
	// Label is the FAT volume label cloud-init's NoCloud datasource finds.
	Label = "CIDATA"
	// Size is the seed partition's size in bytes.
	Size = 64 << 20
	// Reserve is the room an install must leave at the disk's end for the
	// seed partition and the backup GPT (agent/image/growpart and
	// agent/image/rootfs keep it free).
	Reserve = Size + 1<<20
	// PhoneHomeFile is where the phone-home settings are, on the seed
	// filesystem. The installed system's phone-home unit reads exactly
	// this path and the JSON keys url and token.
	PhoneHomeFile = "anvil/phone-home.json"
)

// Errors callers branch on.
var (
	// ErrNoRoom is a disk without free space for the seed at its end.
	ErrNoRoom = errors.New("no room for the seed partition at the disk's end")
	// ErrNoGPT is a disk without a usable GUID partition table: none
	// (the error also wraps gptread.ErrNoGPT) or one that cannot be read
	// (gptread.ErrUnreadable).
	ErrNoGPT = errors.New("no GUID partition table for the seed partition")
)

// Config is what goes into the seed.
type Config struct {
	// InstanceID changes with every install, so cloud-init runs its
	// per-instance modules again (see InstanceID).
	InstanceID string
	// Hostname is the machine's host name (empty: the image's default).
	Hostname string
	// SSHKeys are authorized for the image's default user.
	SSHKeys []string
	// UserData is the operator's user-data, passed on byte for byte.
	UserData []byte
	// PhoneHomeURL and PhoneHomeToken go to PhoneHomeFile; without a URL
	// the file is not written.
	PhoneHomeURL, PhoneHomeToken string
	// MACs are the machine's NICs (from its inventory), matched by
	// network-config.
	MACs []string
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.InstanceID == "" {
		errs = append(errs, errors.New("seed: empty instance-id"))
	}
	if strings.ContainsAny(c.InstanceID, "/\x00\n") {
		errs = append(errs, fmt.Errorf("seed: instance-id %q holds '/', NUL or a newline", c.InstanceID))
	}
	if c.Hostname != "" && !validHostname(c.Hostname) {
		errs = append(errs, fmt.Errorf("seed: host name %q is not an RFC 1123 name", c.Hostname))
	}
	for i, k := range c.SSHKeys {
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, "\r\n") {
			errs = append(errs, fmt.Errorf("seed: SSH key %d is empty or spans lines", i))
		}
	}
	for _, m := range c.MACs {
		if hw, err := net.ParseMAC(m); err != nil || len(hw) != 6 {
			errs = append(errs, fmt.Errorf("seed: %q is not an Ethernet MAC", m))
		}
	}
	return errors.Join(errs...)
}

// validHostname accepts dot-separated labels of letters, digits and
// hyphens (RFC 1123 §2.1), at most 253 characters.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// InstanceID is the instance-id of one install: the machine's identity and
// the install instruction's id, so a re-install of the same machine is a
// new instance. Characters that cannot be in a file name component
// (cloud-init keeps /var/lib/cloud/instances/<id>) become '-'.
func InstanceID(machine, install string) string {
	id := "anvil"
	for _, s := range []string{machine, install} {
		if s != "" {
			id += "-" + s
		}
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '-'
	}, id)
}

// File is one file of the seed filesystem.
type File struct {
	Name string
	Data []byte
}

// Files renders the seed's files, in the order they are written.
func Files(c Config) ([]File, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	md, err := MetaData(c)
	if err != nil {
		return nil, err
	}
	ud, err := UserData(c)
	if err != nil {
		return nil, err
	}
	nc, err := NetworkConfig(c.MACs)
	if err != nil {
		return nil, err
	}
	files := []File{{"meta-data", md}, {"user-data", ud}, {"network-config", nc}}
	if c.PhoneHomeURL != "" {
		ph, err := PhoneHome(c)
		if err != nil {
			return nil, err
		}
		files = append(files, File{PhoneHomeFile, ph})
	}
	return files, nil
}

// MetaData is the NoCloud meta-data file (YAML).
func MetaData(c Config) ([]byte, error) {
	return marshalYAML(struct {
		InstanceID    string `yaml:"instance-id"`
		LocalHostname string `yaml:"local-hostname,omitempty"`
	}{c.InstanceID, c.Hostname})
}

// byName is the network-config when no MAC is known: DHCPv4 on every
// ethernet NIC, matched by the kernel's predictable (en*) and classic
// (eth*) names.
const byName = `version: 2
ethernets:
  anvil-en:
    match:
      name: "en*"
    dhcp4: true
  anvil-eth:
    match:
      name: "eth*"
    dhcp4: true
`

// NetworkConfig is the network-config file: network configuration version
// 2 (netplan's format, as cloud-init reads it from NoCloud), DHCPv4 on the
// NICs with the given MACs, each matched by its address (the OS keeps its
// own interface names); by name (en*, eth*) when there is no MAC.
func NetworkConfig(macs []string) ([]byte, error) {
	if len(macs) == 0 {
		return []byte(byName), nil
	}
	type match struct {
		MAC string `yaml:"macaddress"`
	}
	type ethernet struct {
		Match match `yaml:"match"`
		DHCP4 bool  `yaml:"dhcp4"`
	}
	eths := map[string]ethernet{}
	for i, m := range macs {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("network-config: %q is not an Ethernet MAC", m)
		}
		eths[fmt.Sprintf("anvil-nic%d", i)] = ethernet{Match: match{MAC: hw.String()}, DHCP4: true}
	}
	return marshalYAML(struct {
		Version   int                 `yaml:"version"`
		Ethernets map[string]ethernet `yaml:"ethernets"`
	}{2, eths})
}

// PhoneHome is the phone-home settings file.
func PhoneHome(c Config) ([]byte, error) {
	b, err := json.Marshal(struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	}{c.PhoneHomeURL, c.PhoneHomeToken})
	if err != nil {
		return nil, fmt.Errorf("phone-home settings: %w", err)
	}
	return append(b, '\n'), nil
}

// mergeHow merges anvil's cloud-config part into the operator's (cloud-init
// "Merging cloud-config"): keys the operator set are kept (no_replace),
// lists in them get anvil's items appended (recurse_list, list(append)),
// so ssh_authorized_keys holds both sets and the operator's hostname wins.
const mergeHow = "dict(no_replace,recurse_list)+list(append)+str()"

// UserData is the user-data file.
func UserData(c Config) ([]byte, error) {
	ours := c.Hostname != "" || len(c.SSHKeys) > 0
	if len(c.UserData) > 0 && !ours {
		return c.UserData, nil
	}
	cfg := struct {
		Hostname string   `yaml:"hostname,omitempty"`
		Keys     []string `yaml:"ssh_authorized_keys,omitempty"`
		MergeHow string   `yaml:"merge_how,omitempty"`
	}{Hostname: c.Hostname, Keys: c.SSHKeys}
	if len(c.UserData) == 0 {
		b, err := marshalYAML(cfg)
		if err != nil {
			return nil, err
		}
		return append([]byte("#cloud-config\n"), b...), nil
	}
	cfg.MergeHow = mergeHow
	b, err := marshalYAML(cfg)
	if err != nil {
		return nil, err
	}
	return Multipart(c.UserData, append([]byte("#cloud-config\n"), b...)), nil
}

// Multipart is a MIME multi-part archive (RFC 2046 §5.1) of the operator's
// user-data and anvil's cloud-config, in that order. The operator's part
// is kept byte for byte: a MIME message is embedded as it is (its headers
// become the part's), anything else is a text/plain part, so cloud-init
// infers its type from its first line exactly as for standalone user-data
// (application/gzip for gzip data, which cloud-init decompresses first),
// sent as 7bit when it is plain ASCII text and base64 otherwise.
func Multipart(operator, anvil []byte) []byte {
	boundary := boundaryFor(operator, anvil)
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\nMIME-Version: 1.0\n\n", boundary)
	for _, p := range [][]byte{operator, anvil} {
		fmt.Fprintf(&b, "--%s\n", boundary)
		switch {
		case isMIME(p):
			b.Write(p)
		case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
			b.WriteString("Content-Type: application/gzip\nMIME-Version: 1.0\n")
			writeBody(&b, p, false)
		default:
			b.WriteString("Content-Type: text/plain; charset=\"utf-8\"\nMIME-Version: 1.0\n")
			writeBody(&b, p, sevenBit(p))
		}
		// The line break before a delimiter belongs to the delimiter
		// (RFC 2046 §5.1.1): the part ends with p's last byte.
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "--%s--\n", boundary)
	return b.Bytes()
}

// isMIME reports whether cloud-init reads p as a MIME message: it looks for
// "mime-version:" in the first 4096 bytes (cloudinit/user_data.py,
// convert_string). Such a message must start with a header line to be
// embedded as a part.
func isMIME(p []byte) bool {
	head := bytes.ToLower(p[:min(len(p), 4096)])
	if !bytes.Contains(head, []byte("mime-version:")) {
		return false
	}
	name, _, ok := bytes.Cut(p, []byte(":"))
	return ok && len(name) > 0 && !bytes.ContainsAny(name, " \t\r\n")
}

// sevenBit reports whether p can go unencoded: printable ASCII, tabs and
// LF line ends, lines of at most 998 bytes (RFC 5322 §2.1.1).
func sevenBit(p []byte) bool {
	line := 0
	for _, c := range p {
		switch {
		case c == '\n':
			line = 0
			continue
		case c == '\t' || c >= 0x20 && c < 0x7f:
		default:
			return false
		}
		if line++; line > 998 {
			return false
		}
	}
	return true
}

func writeBody(b *bytes.Buffer, p []byte, plain bool) {
	if plain {
		b.WriteString("Content-Transfer-Encoding: 7bit\n\n")
		b.Write(p)
		return
	}
	b.WriteString("Content-Transfer-Encoding: base64\n\n")
	enc := base64.StdEncoding.EncodeToString(p)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
}

// boundaryFor derives the boundary from the parts (reproducible seeds)
// and makes sure neither part holds it.
func boundaryFor(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	sum := h.Sum(nil)
	for i := 0; ; i++ {
		b := fmt.Sprintf("==anvil-seed-%s-%d==", hex.EncodeToString(sum[:12]), i)
		clash := false
		for _, p := range parts {
			clash = clash || bytes.Contains(p, []byte(b))
		}
		if !clash {
			return b
		}
	}
}

func marshalYAML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("seed YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("seed YAML: %w", err)
	}
	return b.Bytes(), nil
}

// Extent is a partition's place in logical blocks (End inclusive).
type Extent struct {
	Index      int
	Start, End uint64
}

// maxIndex is the highest partition number of a standard GPT (128
// entries).
const maxIndex = 128

// Place finds the seed partition's place on a disk of logical block size
// lbs whose last usable block is lastUsable and whose other partitions are
// parts (an earlier seed already left out): the last Size bytes before
// lastUsable, starting on a MiB boundary, numbered with the lowest free
// partition number. ErrNoRoom when a partition reaches into that range.
func Place(parts []Extent, lastUsable uint64, lbs int64) (Extent, error) {
	if lbs <= 0 || Size%lbs != 0 {
		return Extent{}, fmt.Errorf("seed: logical block size %d", lbs)
	}
	end := int64(lastUsable+1) * lbs // exclusive, in bytes
	start := (end - Size) / (1 << 20) * (1 << 20)
	if start < 1<<20 {
		return Extent{}, fmt.Errorf("%w: the disk's usable area ends at byte %d, the seed needs %d MiB after the first MiB", ErrNoRoom, end, Size>>20)
	}
	e := Extent{Start: uint64(start / lbs)}
	e.End = e.Start + Size/uint64(lbs) - 1
	used := map[int]bool{}
	for _, p := range parts {
		used[p.Index] = true
		if p.End >= e.Start && p.Start <= e.End {
			return Extent{}, fmt.Errorf("%w: partition %d ends at MiB %d, the seed needs MiB [%d, %d) (the image fills the disk; leave %d MiB free at its end)",
				ErrNoRoom, p.Index, int64(p.End+1)*lbs>>20, start>>20, (start+Size)>>20, Reserve>>20)
		}
	}
	for i := 1; i <= maxIndex; i++ {
		if !used[i] {
			e.Index = i
			return e, nil
		}
	}
	return Extent{}, fmt.Errorf("%w: all %d partition entries are in use", ErrNoRoom, maxIndex)
}
