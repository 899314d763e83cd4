// Package efiboot keeps an installed disk in a UEFI machine's boot order,
// right after the network: the network stays first, so the controller
// decides every boot (its loop guard sends an installed machine on with
// iPXE's "exit 1", and the firmware takes the next boot option: the
// disk). It reads and writes the firmware's boot manager variables (UEFI
// 2.10 §3.1: Boot####, BootOrder, BootCurrent) with
// github.com/canonical/go-efilib, through efivarfs on Linux.
//
// The entry is a short-form hard drive device path (UEFI 2.10 §10.3.5.1,
// §3.1.2): HD(partition, GPT, partition GUID, start, size) followed by the
// loader's file path, as efibootmgr writes it; firmware expands it to the
// disk that holds that partition GUID, wherever the disk sits.
//
// Plan is the pure core: from the variables read, it decides which entry to
// write, which stale anvil entries to delete and the new BootOrder. The
// shell (efiboot_linux.go) mounts efivarfs, reads, applies and reports.
package efiboot

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	efi "github.com/canonical/go-efilib"
)

// DescriptionPrefix starts the description of every entry anvil writes;
// entries with it that point elsewhere are stale (an earlier install) and
// are deleted.
const DescriptionPrefix = "anvil: "

// State is the boot manager's variables as read.
type State struct {
	// Current is BootCurrent, the entry this boot came from; HasCurrent
	// is false when the firmware did not set it.
	Current    uint16
	HasCurrent bool
	Order      []uint16
	Options    map[uint16]*efi.LoadOption
}

// Want is the entry the installed disk needs.
type Want struct {
	Description string
	Path        efi.DevicePath
}

// Plan is what to change.
type Plan struct {
	// Entry is the disk's Boot#### number; Write is set when the variable
	// must be (re)written (new, or its description or attributes differ).
	Entry uint16
	Write *efi.LoadOption
	// Created says Entry is new.
	Created bool
	// Delete are stale anvil entries.
	Delete []uint16
	// Order is the new BootOrder; Reorder says it differs from the old.
	Order   []uint16
	Reorder bool
	// Network is the network entry placed first; HasNetwork is false when
	// there is none (the disk then comes first: only the BMC can send the
	// machine to the network).
	Network    uint16
	HasNetwork bool
}

// Changed reports whether the plan writes anything.
func (p Plan) Changed() bool { return p.Write != nil || len(p.Delete) > 0 || p.Reorder }

// ErrNoFreeEntry is a boot manager with all 65536 entries taken.
var ErrNoFreeEntry = errors.New("no free Boot#### number")

// MakePlan decides the changes: reuse an entry with the wanted device path
// (its description and attributes brought up to date), else take the lowest
// free number; delete other entries anvil wrote; order the network entry
// this boot came from (else the first network entry of BootOrder) first,
// the disk second, then every other entry in its old order. Entries that
// BootOrder names but that do not exist stay where they are: the firmware
// skips them, and they are not anvil's.
func MakePlan(st State, w Want) (Plan, error) {
	if len(w.Path) == 0 || !strings.HasPrefix(w.Description, DescriptionPrefix) {
		return Plan{}, fmt.Errorf("boot entry %q: want a device path and a description starting %q", w.Description, DescriptionPrefix)
	}
	wantBytes, err := w.Path.Bytes()
	if err != nil {
		return Plan{}, fmt.Errorf("boot entry path %s: %w", w.Path, err)
	}
	p := Plan{}
	found := false
	for _, n := range sortedKeys(st.Options) {
		o := st.Options[n]
		b, err := o.FilePath.Bytes()
		same := err == nil && bytes.Equal(b, wantBytes)
		switch {
		case same && !found:
			p.Entry, found = n, true
			if o.Description != w.Description || o.Attributes != efi.LoadOptionActive || len(o.OptionalData) > 0 {
				p.Write = &efi.LoadOption{Attributes: efi.LoadOptionActive, Description: w.Description, FilePath: w.Path}
			}
		case strings.HasPrefix(o.Description, DescriptionPrefix):
			p.Delete = append(p.Delete, n)
		}
	}
	if !found {
		n, ok := freeNumber(st.Options)
		if !ok {
			return Plan{}, ErrNoFreeEntry
		}
		p.Entry, p.Created = n, true
		p.Write = &efi.LoadOption{Attributes: efi.LoadOptionActive, Description: w.Description, FilePath: w.Path}
	}
	if st.HasCurrent && IsNetwork(st.Options[st.Current]) {
		p.Network, p.HasNetwork = st.Current, true
	} else {
		for _, n := range st.Order {
			if IsNetwork(st.Options[n]) {
				p.Network, p.HasNetwork = n, true
				break
			}
		}
	}
	if p.HasNetwork {
		p.Order = append(p.Order, p.Network)
	}
	p.Order = append(p.Order, p.Entry)
	for _, n := range st.Order {
		if (p.HasNetwork && n == p.Network) || n == p.Entry || slices.Contains(p.Delete, n) || slices.Contains(p.Order, n) {
			continue
		}
		p.Order = append(p.Order, n)
	}
	p.Reorder = !slices.Equal(p.Order, st.Order)
	return p, nil
}

// IsNetwork reports whether a boot option loads from the network: its path
// has a MAC address, IPv4, IPv6 or URI node (PXE and HTTP Boot entries).
func IsNetwork(o *efi.LoadOption) bool {
	if o == nil {
		return false
	}
	for _, n := range o.FilePath {
		switch n := n.(type) {
		case *efi.MACAddrDevicePathNode, *efi.IPv4DevicePathNode, *efi.IPv6DevicePathNode:
			return true
		case *efi.GenericDevicePathNode:
			if n.Type == efi.MessagingDevicePath && n.SubType == uriSubType {
				return true
			}
		}
	}
	return false
}

// uriSubType is the messaging device path's URI subtype (UEFI 2.10
// §10.3.4.23), which go-efilib keeps as a generic node.
const uriSubType efi.DevicePathNodeSubType = 24

func freeNumber(opts map[uint16]*efi.LoadOption) (uint16, bool) {
	for n := 0; n <= 0xffff; n++ {
		if _, taken := opts[uint16(n)]; !taken {
			return uint16(n), true
		}
	}
	return 0, false
}

func sortedKeys(m map[uint16]*efi.LoadOption) []uint16 {
	ks := make([]uint16, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// PathString renders a device path as efibootmgr shows one:
// HD(1,GPT,...)/\EFI\BOOT\BOOTX64.EFI.
func PathString(p efi.DevicePath) string {
	s := make([]string, len(p))
	for i, n := range p {
		if f, ok := n.(efi.FilePathDevicePathNode); ok {
			s[i] = string(f)
			continue
		}
		s[i] = n.ToString(efi.DevicePathDisplayOnly)
	}
	return strings.Join(s, "/")
}

// FormatOrder renders a BootOrder as efibootmgr does: 0003,0008,0000.
func FormatOrder(order []uint16) string {
	s := make([]string, len(order))
	for i, n := range order {
		s[i] = fmt.Sprintf("%04X", n)
	}
	return strings.Join(s, ",")
}

// Describe is the one-line report of a plan carried out.
func (p Plan) Describe(st State, w Want) string {
	var parts []string
	name := fmt.Sprintf("Boot%04X %q (%s)", p.Entry, w.Description, PathString(w.Path))
	switch {
	case p.Created:
		parts = append(parts, "created "+name)
	case p.Write != nil:
		parts = append(parts, "updated "+name)
	default:
		parts = append(parts, "kept "+name)
	}
	for _, n := range p.Delete {
		parts = append(parts, fmt.Sprintf("deleted stale Boot%04X %q", n, st.Options[n].Description))
	}
	if p.Reorder {
		parts = append(parts, fmt.Sprintf("BootOrder %s -> %s", FormatOrder(st.Order), FormatOrder(p.Order)))
	} else {
		parts = append(parts, "BootOrder "+FormatOrder(p.Order)+" kept")
	}
	if p.HasNetwork {
		parts = append(parts, fmt.Sprintf("network entry Boot%04X %q first", p.Network, st.Options[p.Network].Description))
	} else {
		parts = append(parts, "no network entry in BootOrder: the disk boots first, only the BMC can send the machine to the network")
	}
	return "UEFI: " + strings.Join(parts, "; ")
}
