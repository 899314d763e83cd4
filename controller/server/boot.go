package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bootobs"
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
	// ErrNotBooting is a phone home while no installed system can be
	// booting: the image is not written yet, or the machine phoned home
	// already and was not rebooted since.
	ErrNotBooting = errors.New("machine is not booting its installed system")
)

// MintBootToken returns a boot token for one network boot: bound to the
// SMBIOS UUID (lower-cased; "" when the firmware gave none and the MAC is
// not known: the token can then only enroll a new machine), the MAC the
// machine booted from and the client address the script goes to; good for
// one registration within the configured BootTokenTTL.
func (s *Server) MintBootToken(uuid, mac, addr string) (string, error) {
	if mac == "" {
		return "", errors.New("a boot token needs the MAC of the booting NIC")
	}
	now := s.now()
	return mintBootToken(s.bootSigner, now.Add(s.cfg.BootTokenTTL), strings.ToLower(uuid), strings.ToLower(mac), addr, now)
}

// ObserveBoot keeps what the boot service saw of a network boot (bounded,
// rate limited, in memory). It changes no machine: observations come from
// unauthenticated requests; operators see them (Machine.boot_observations)
// and the machine's next registration quotes the newest.
func (s *Server) ObserveBoot(o bootobs.Observation) {
	o.UUID, o.MAC = strings.ToLower(o.UUID), strings.ToLower(o.MAC)
	if o.Time.IsZero() {
		o.Time = s.now()
	}
	s.bootObs.Add(o)
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

// phoneHomeToken is the token an installed system phones home with: bound
// to the machine and its allocation generation (allocate, reinstall and
// free start a new one), good for PhoneHomeTTL.
func (s *Server) phoneHomeToken(m *store.Machine) (string, error) {
	return s.phoneHome.Sign(s.now().Add(s.cfg.PhoneHomeTTL), m.ID, strconv.FormatInt(m.Trust.Generation, 10))
}

// PhoneHome records that the installed system of the token's allocation
// booted (PHONED_HOME; the machine becomes Provisioned). It is accepted
// while the machine is Booting (its image written, the agent gone), or
// Provisioned after a reboot the controller caused or was told of; it
// returns the machine id.
func (s *Server) PhoneHome(ctx context.Context, token, msg string) (string, error) {
	fields, err := s.phoneHome.Verify(token, s.now())
	if err != nil || len(fields) != 2 {
		return "", fmt.Errorf("%w: %v", ErrPhoneHomeToken, err)
	}
	id, gen := fields[0], fields[1]
	err = s.commit(ctx, func(tx store.Tx, fx *effects) error {
		m, err := tx.GetMachine(ctx, id)
		if err != nil {
			return err
		}
		if m.Allocation == nil {
			return fmt.Errorf("%w: %s phoned home but was freed", ErrNotAllocated, id)
		}
		if got := strconv.FormatInt(m.Trust.Generation, 10); got != gen {
			return fmt.Errorf("%w: it belongs to allocation generation %s of %s, which was reinstalled, freed or allocated again since (now %s)", ErrPhoneHomeToken, gen, id, got)
		}
		st := m.Status
		booted := st.State == anvilv1.MachineState_MACHINE_STATE_BOOTING ||
			(st.State == anvilv1.MachineState_MACHINE_STATE_PROVISIONED && st.RebootPlanned)
		if !booted {
			return fmt.Errorf("%w: machine %s is %s", ErrNotBooting, id, stateName(st.State))
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
		tok, err := s.phoneHomeToken(m)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "phone-home token for %s: %v", m.ID, err)
		}
		in.PhoneHomeUrl, in.PhoneHomeToken = s.cfg.PhoneHomeURL, tok
	}
	return &anvilv1.Instruction{Kind: &anvilv1.Instruction_Install{Install: in}}, nil
}
