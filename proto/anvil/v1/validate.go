package anvilv1

// Hand-written structural validation of requests. The go-grpc-middleware
// validator interceptor calls ValidateAll on every request that has it and
// answers InvalidArgument with the joined messages. Checks that need the
// store (does the image exist, is the machine busy) belong to the server.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var (
	idPattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	hostnamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	uuidPattern     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	labelKeyPattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	labelValPattern = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

// Limits on operator-supplied payloads.
const (
	MaxUserDataBytes = 64 << 10
	MaxSSHKeys       = 64
	MaxCmdlineBytes  = 2048
	MaxMessageBytes  = 4096
	MaxDisks         = 1024
	MaxNICs          = 1024
	MaxPCIDevices    = 4096
	// MaxLLDPNeighbors bounds the LLDP neighbours of one NIC (a port has
	// one switch; a few more are tolerated for hubs and tests).
	MaxLLDPNeighbors = 16
	// MaxInventoryString bounds the free text the agent reads from
	// hardware and neighbours (names, descriptions, addresses).
	MaxInventoryString = 512
)

// ValidID reports whether s is a valid image or size id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// ValidUUID reports whether s is a lower-case canonical UUID.
func ValidUUID(s string) bool { return uuidPattern.MatchString(s) }

func checkID(what, s string) error {
	if !ValidID(s) {
		return fmt.Errorf("%s %q is not a valid id ([a-z0-9][a-z0-9._-]{0,62})", what, s)
	}
	return nil
}

func checkMachineID(s string) error {
	if s == "" {
		return errors.New("machine id is required")
	}
	if len(s) > 128 {
		return errors.New("machine id is longer than 128 bytes")
	}
	return nil
}

// ParseChecksum splits "sha256:<hex>" / "sha512:<hex>" and checks the digest
// length.
func ParseChecksum(s string) (algo string, digest []byte, err error) {
	algo, hexDigest, ok := strings.Cut(s, ":")
	if !ok {
		return "", nil, fmt.Errorf("checksum %q: want sha256:<hex> or sha512:<hex>", s)
	}
	want := map[string]int{"sha256": 32, "sha512": 64}[algo]
	if want == 0 {
		return "", nil, fmt.Errorf("checksum %q: algorithm %q is not sha256 or sha512", s, algo)
	}
	digest, err = hex.DecodeString(hexDigest)
	if err != nil || len(digest) != want {
		return "", nil, fmt.Errorf("checksum %q: want %d hex digits for %s", s, 2*want, algo)
	}
	return algo, digest, nil
}

func checkLabels(what string, m map[string]string) error {
	var errs []error
	for k, v := range m {
		if !labelKeyPattern.MatchString(k) {
			errs = append(errs, fmt.Errorf("%s key %q is not a valid label key", what, k))
		}
		if !labelValPattern.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s value %q of %q is not a valid label value", what, v, k))
		}
	}
	return errors.Join(errs...)
}

func checkEnum[E ~int32](what string, v E, names map[int32]string, allowZero bool) error {
	if v == 0 && allowZero {
		return nil
	}
	if _, ok := names[int32(v)]; !ok || v == 0 {
		return fmt.Errorf("%s %d is not a known value", what, v)
	}
	return nil
}

// ValidateAll checks the inventory's identity and bounds.
func (x *Inventory) ValidateAll() error {
	if x == nil {
		return errors.New("inventory is required")
	}
	var errs []error
	uuid := x.GetProduct().GetUuid()
	switch {
	case uuid == "":
		errs = append(errs, errors.New("inventory.product.uuid (SMBIOS system UUID) is required"))
	case !ValidUUID(uuid):
		errs = append(errs, fmt.Errorf("inventory.product.uuid %q is not a lower-case canonical UUID", uuid))
	}
	if len(x.GetDisks()) > MaxDisks {
		errs = append(errs, fmt.Errorf("inventory has %d disks, more than %d", len(x.GetDisks()), MaxDisks))
	}
	if len(x.GetNics()) > MaxNICs {
		errs = append(errs, fmt.Errorf("inventory has %d NICs, more than %d", len(x.GetNics()), MaxNICs))
	}
	if len(x.GetPciDevices()) > MaxPCIDevices {
		errs = append(errs, fmt.Errorf("inventory has %d PCI devices, more than %d", len(x.GetPciDevices()), MaxPCIDevices))
	}
	for i, d := range x.GetDisks() {
		if d.GetName() == "" || !strings.HasPrefix(d.GetPath(), "/dev/") {
			errs = append(errs, fmt.Errorf("inventory.disks[%d]: name and a /dev/ path are required (got %q, %q)", i, d.GetName(), d.GetPath()))
		}
	}
	for i, n := range x.GetNics() {
		if len(n.GetLldpNeighbors()) > MaxLLDPNeighbors {
			errs = append(errs, fmt.Errorf("inventory.nics[%d] has %d LLDP neighbours, more than %d", i, len(n.GetLldpNeighbors()), MaxLLDPNeighbors))
			continue
		}
		for j, nb := range n.GetLldpNeighbors() {
			if err := boundedStrings(append([]string{nb.GetChassisId(), nb.GetPortId(), nb.GetPortDescription(), nb.GetSystemName(), nb.GetSystemDescription()},
				nb.GetManagementAddresses()...)...); err != nil || len(nb.GetManagementAddresses()) > MaxLLDPNeighbors {
				errs = append(errs, fmt.Errorf("inventory.nics[%d].lldp_neighbors[%d]: %v (or more than %d management addresses)", i, j, err, MaxLLDPNeighbors))
			}
		}
	}
	if b := x.GetBmc(); b != nil {
		if err := boundedStrings(b.GetIp(), b.GetIpSource(), b.GetNetmask(), b.GetGateway(), b.GetMac(), b.GetFirmware(), b.GetIpmiVersion()); err != nil {
			errs = append(errs, fmt.Errorf("inventory.bmc: %w", err))
		}
		if len(b.GetEnrollError()) > MaxMessageBytes {
			errs = append(errs, fmt.Errorf("inventory.bmc.enroll_error is %d bytes, more than %d", len(b.GetEnrollError()), MaxMessageBytes))
		}
	}
	return errors.Join(errs...)
}

// boundedStrings fails when one of ss is longer than MaxInventoryString.
func boundedStrings(ss ...string) error {
	for _, v := range ss {
		if len(v) > MaxInventoryString {
			return fmt.Errorf("a value of %d bytes, more than %d", len(v), MaxInventoryString)
		}
	}
	return nil
}

// ValidateAll implements the validator interceptor's interface.
func (x *RegisterRequest) ValidateAll() error { return x.GetInventory().ValidateAll() }

// ValidateAll implements the validator interceptor's interface.
func (x *ReportRequest) ValidateAll() error {
	var errs []error
	switch x.GetType() {
	case EventType_EVENT_TYPE_WIPING, EventType_EVENT_TYPE_WIPED,
		EventType_EVENT_TYPE_INSTALLING, EventType_EVENT_TYPE_BOOTING,
		EventType_EVENT_TYPE_FAILED, EventType_EVENT_TYPE_REBOOTING, EventType_EVENT_TYPE_POWERING_OFF,
		EventType_EVENT_TYPE_BMC: // the outcome of an in-band BMC enrollment
	default:
		// WAITING is the controller's record of a Wait stream, and
		// PHONED_HOME is accepted from the installed system only (the
		// boot service's /phone-home with its allocation's token).
		errs = append(errs, fmt.Errorf("event type %s cannot be reported by a machine's agent", x.GetType()))
	}
	if x.GetType() == EventType_EVENT_TYPE_FAILED && strings.TrimSpace(x.GetMessage()) == "" {
		errs = append(errs, errors.New("a FAILED report needs a message with the reason"))
	}
	if len(x.GetMessage()) > MaxMessageBytes {
		errs = append(errs, fmt.Errorf("message is %d bytes, more than %d", len(x.GetMessage()), MaxMessageBytes))
	}
	if p := x.GetProgress(); p != nil && p.GetBytesTotal() > 0 && p.GetBytesDone() > p.GetBytesTotal() {
		errs = append(errs, fmt.Errorf("progress: bytes_done %d exceeds bytes_total %d", p.GetBytesDone(), p.GetBytesTotal()))
	}
	return errors.Join(errs...)
}

// ValidateAll implements the validator interceptor's interface.
func (x *GetMachineRequest) ValidateAll() error { return checkMachineID(x.GetId()) }

// ValidateAll implements the validator interceptor's interface.
func (x *DeleteMachineRequest) ValidateAll() error { return checkMachineID(x.GetId()) }

// ValidateAll implements the validator interceptor's interface.
func (x *ListMachinesRequest) ValidateAll() error {
	return errors.Join(
		checkEnum("state", x.GetState(), MachineState_name, true),
		checkEnum("liveliness", x.GetLiveliness(), Liveliness_name, true),
		checkLabels("label filter", x.GetLabels()),
	)
}

// ValidateAll implements the validator interceptor's interface.
func (x *AllocateMachineRequest) ValidateAll() error {
	var errs []error
	if x.GetMachineId() == "" && x.GetSizeId() == "" && len(x.GetSelector()) == 0 {
		errs = append(errs, errors.New("give a machine id, or a size and/or selector"))
	}
	if x.GetMachineId() != "" && (x.GetSizeId() != "" || len(x.GetSelector()) > 0) {
		errs = append(errs, errors.New("give either a machine id or a size/selector, not both"))
	}
	if x.GetSizeId() != "" {
		errs = append(errs, checkID("size", x.GetSizeId()))
	}
	errs = append(errs, checkID("image", x.GetImageId()), checkLabels("selector", x.GetSelector()))
	if h := x.GetHostname(); h != "" && (len(h) > 253 || !hostnamePattern.MatchString(h)) {
		errs = append(errs, fmt.Errorf("hostname %q is not a valid lower-case RFC 1123 host name", h))
	}
	if n := len(x.GetSshPublicKeys()); n > MaxSSHKeys {
		errs = append(errs, fmt.Errorf("%d ssh keys, more than %d", n, MaxSSHKeys))
	}
	for i, k := range x.GetSshPublicKeys() {
		if err := checkSSHKey(k); err != nil {
			errs = append(errs, fmt.Errorf("ssh key %d: %w", i, err))
		}
	}
	if n := len(x.GetUserData()); n > MaxUserDataBytes {
		errs = append(errs, fmt.Errorf("user-data is %d bytes, more than %d", n, MaxUserDataBytes))
	}
	if n := len(x.GetExtraKernelCmdline()); n > MaxCmdlineBytes {
		errs = append(errs, fmt.Errorf("kernel cmdline is %d bytes, more than %d", n, MaxCmdlineBytes))
	}
	if d := x.GetTargetDisk(); d != "" && !validTargetDisk(d) {
		errs = append(errs, fmt.Errorf("target disk %q: want a /dev/ path, a serial number or a WWN (printable, no spaces, at most 128 bytes)", d))
	}
	return errors.Join(errs...)
}

// checkSSHKey checks the authorized_keys shape: type, base64 blob, comment.
func checkSSHKey(k string) error {
	f := strings.Fields(k)
	if len(f) < 2 {
		return errors.New("want '<type> <base64> [comment]'")
	}
	switch {
	case strings.HasPrefix(f[0], "ssh-"), strings.HasPrefix(f[0], "ecdsa-sha2-"), strings.HasPrefix(f[0], "sk-"):
	default:
		return fmt.Errorf("unknown key type %q", f[0])
	}
	if strings.ContainsAny(k, "\n\r") {
		return errors.New("key contains a line break")
	}
	return nil
}

// ValidateAll implements the validator interceptor's interface.
func (x *FreeMachineRequest) ValidateAll() error {
	return errors.Join(checkMachineID(x.GetId()), checkEnum("erase mode", x.GetEraseMode(), EraseMode_name, true))
}

// ValidateAll implements the validator interceptor's interface.
func (x *ReinstallMachineRequest) ValidateAll() error {
	err := checkMachineID(x.GetId())
	if x.GetImageId() != "" {
		err = errors.Join(err, checkID("image", x.GetImageId()))
	}
	return err
}

// ValidateAll implements the validator interceptor's interface.
func (x *SetMachineLabelsRequest) ValidateAll() error {
	return errors.Join(checkMachineID(x.GetId()), checkLabels("label", x.GetLabels()))
}

// ValidateAll implements the validator interceptor's interface.
func (x *ListEventsRequest) ValidateAll() error {
	err := checkMachineID(x.GetMachineId())
	if x.GetLimit() < 0 {
		err = errors.Join(err, fmt.Errorf("limit %d is negative", x.GetLimit()))
	}
	return err
}

// ValidateAll implements the validator interceptor's interface.
func (x *WatchEventsRequest) ValidateAll() error {
	if x.GetAfterSeq() < 0 {
		return fmt.Errorf("after_seq %d is negative", x.GetAfterSeq())
	}
	return nil
}

// ValidateAll checks an image definition.
func (x *Image) ValidateAll() error {
	if x == nil {
		return errors.New("image is required")
	}
	errs := []error{checkID("image", x.GetId())}
	u := x.GetUrl()
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "file://") && !strings.HasPrefix(u, "oci://") {
		errs = append(errs, fmt.Errorf("image url %q: want http://, https://, file:// or oci://", u))
	}
	if _, _, err := ParseChecksum(x.GetChecksum()); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkEnum("image format", x.GetFormat(), ImageFormat_name, false))
	if len(x.GetFeatures()) == 0 {
		errs = append(errs, errors.New("image needs at least one feature (machine or firewall)"))
	}
	for _, f := range x.GetFeatures() {
		errs = append(errs, checkEnum("image feature", f, ImageFeature_name, false))
	}
	return errors.Join(errs...)
}

// ValidateAll implements the validator interceptor's interface.
func (x *CreateImageRequest) ValidateAll() error { return x.GetImage().ValidateAll() }

// ValidateAll implements the validator interceptor's interface.
func (x *GetImageRequest) ValidateAll() error { return checkID("image", x.GetId()) }

// ValidateAll implements the validator interceptor's interface.
func (x *DeleteImageRequest) ValidateAll() error { return checkID("image", x.GetId()) }

// ValidateAll implements the validator interceptor's interface. The size's
// constraints are checked by the server with the size rules.
func (x *CreateSizeRequest) ValidateAll() error {
	if x.GetSize() == nil {
		return errors.New("size is required")
	}
	return nil
}

// ValidateAll implements the validator interceptor's interface.
func (x *GetSizeRequest) ValidateAll() error { return checkID("size", x.GetId()) }

// ValidateAll implements the validator interceptor's interface.
func (x *DeleteSizeRequest) ValidateAll() error { return checkID("size", x.GetId()) }

// validTargetDisk accepts a /dev/ path, or a disk serial number or WWN as
// the agent's inventory reports them.
func validTargetDisk(d string) bool {
	if strings.HasPrefix(d, "/dev/") {
		return !strings.Contains(d, "..")
	}
	if len(d) > 128 {
		return false
	}
	for _, r := range d {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return !strings.Contains(d, "/")
}

// MaxBMCAddressBytes bounds a machine's BMC address.
const MaxBMCAddressBytes = 1024

// ValidateAll implements the validator interceptor's interface. Which BMC
// types are supported is the server's decision (controller/bmc); this only
// checks the shape.
func (x *SetMachineBMCRequest) ValidateAll() error {
	errs := []error{checkMachineID(x.GetId())}
	a := x.GetAddress()
	if len(a) > MaxBMCAddressBytes {
		errs = append(errs, fmt.Errorf("BMC address is %d bytes, more than %d", len(a), MaxBMCAddressBytes))
	}
	for _, r := range a {
		if r <= ' ' || r == 0x7f {
			errs = append(errs, fmt.Errorf("BMC address %q contains white space or a control character", a))
			break
		}
	}
	return errors.Join(errs...)
}

// ValidateAll implements the validator interceptor's interface.
func (x *PowerMachineRequest) ValidateAll() error {
	return errors.Join(
		checkMachineID(x.GetId()),
		checkEnum("power action", x.GetAction(), PowerAction_name, false),
		checkEnum("next boot device", x.GetNextBoot(), BootDevice_name, true),
	)
}
