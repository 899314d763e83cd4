package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Token prefixes of the signed tokens.
const (
	// BootTokenPrefix starts a boot token minted for one network boot.
	BootTokenPrefix = "anvb_"
	// PhoneHomeTokenPrefix starts an installed system's phone-home token.
	PhoneHomeTokenPrefix = "anvp_"
)

// Errors of the boot-facing methods, for the boot service's HTTP codes.
var (
	// ErrPhoneHomeToken is a phone-home token that is forged, malformed or
	// belongs to another allocation.
	ErrPhoneHomeToken = errors.New("invalid phone-home token")
	// ErrNotAllocated is a phone home from a machine with no allocation.
	ErrNotAllocated = errors.New("machine is not allocated")
)

// MintBootToken returns a boot token for one network boot of the machine
// with SMBIOS UUID uuid (lower-cased; "" when the firmware gave none),
// accepted at Register for the configured BootTokenTTL and only for that
// UUID.
func (s *Server) MintBootToken(uuid string) (string, error) {
	return s.bootSigner.Sign(s.now().Add(s.cfg.BootTokenTTL), strings.ToLower(uuid))
}

// BootLookup finds the machine a network boot request comes from: by
// SMBIOS UUID, else by MAC; nil, nil when it is unknown.
func (s *Server) BootLookup(ctx context.Context, uuid, mac string) (*store.Machine, error) {
	uuid, mac = strings.ToLower(uuid), strings.ToLower(mac)
	var found *store.Machine
	err := s.store.View(ctx, func(tx store.Tx) error {
		if uuid != "" {
			m, err := tx.GetMachineByUUID(ctx, uuid)
			if err == nil {
				found = m
				return nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if mac == "" {
			return nil
		}
		all, err := tx.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			return err
		}
		for _, m := range all {
			for _, x := range m.MACs {
				if x == mac {
					found = m
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boot lookup uuid=%q mac=%q: %w", uuid, mac, err)
	}
	return found, nil
}

// RecordBoot appends a PXE_BOOTING event for a network boot request of a
// known machine.
func (s *Server) RecordBoot(ctx context.Context, machineID, msg string) error {
	err := s.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, machineID)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, fx, m, false, &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_PXE_BOOTING, Message: msg})
	})
	if err != nil {
		return fmt.Errorf("record network boot of %s: %w", machineID, err)
	}
	return nil
}

// phoneHomeToken is the token an installed system phones home with: bound
// to the machine and to the allocation's time, so it stops working once
// the machine is freed or allocated again.
func (s *Server) phoneHomeToken(machineID string, al *anvilv1.Allocation) (string, error) {
	return s.phoneHome.Sign(time.Time{}, machineID, al.GetAllocatedAt().AsTime().UTC().Format(time.RFC3339Nano))
}

// PhoneHome records that the installed system of the token's allocation
// booted (PHONED_HOME; the machine becomes Provisioned). It returns the
// machine id.
func (s *Server) PhoneHome(ctx context.Context, token, msg string) (string, error) {
	fields, err := s.phoneHome.Verify(token, s.now())
	if err != nil || len(fields) != 2 {
		return "", fmt.Errorf("%w: %v", ErrPhoneHomeToken, err)
	}
	id, stamp := fields[0], fields[1]
	err = s.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, id)
		if err != nil {
			return err
		}
		if m.Allocation == nil {
			return fmt.Errorf("%w: %s phoned home but was freed", ErrNotAllocated, id)
		}
		if got := m.Allocation.GetAllocatedAt().AsTime().UTC().Format(time.RFC3339Nano); got != stamp {
			return fmt.Errorf("%w: it belongs to the allocation of %s at %s, the machine was allocated again at %s", ErrPhoneHomeToken, id, stamp, got)
		}
		m.LastSeen = s.now()
		return s.record(ctx, tx, fx, m, false, &anvilv1.Event{Time: timestamppb.New(s.now()), Type: anvilv1.EventType_EVENT_TYPE_PHONED_HOME, Message: msg})
	})
	if err != nil {
		return id, fmt.Errorf("phone home of %s: %w", id, err)
	}
	return id, nil
}

// installFor is the Install instruction of an allocation, with the
// phone-home token of that allocation when a phone-home URL is configured.
func (s *Server) installFor(m *store.Machine, img *anvilv1.Image, al *anvilv1.Allocation) (*anvilv1.Instruction, error) {
	in := &anvilv1.Install{
		ImageId:            img.GetId(),
		Url:                img.GetUrl(),
		Checksum:           img.GetChecksum(),
		Format:             img.GetFormat(),
		TargetDisk:         al.GetTargetDisk(),
		ExtraKernelCmdline: al.GetExtraKernelCmdline(),
		Hostname:           al.GetHostname(),
		SshPublicKeys:      al.GetSshPublicKeys(),
		UserData:           al.GetUserData(),
	}
	if s.cfg.PhoneHomeURL != "" {
		tok, err := s.phoneHomeToken(m.ID, al)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "phone-home token for %s: %v", m.ID, err)
		}
		in.PhoneHomeUrl, in.PhoneHomeToken = s.cfg.PhoneHomeURL, tok
	}
	return &anvilv1.Instruction{Kind: &anvilv1.Instruction_Install{Install: in}}, nil
}
