// Package bmcenroll finds the machine's baseboard management controller
// in-band, through the kernel's IPMI system interface (/dev/ipmi0, loaded
// from ipmi_msghandler, ipmi_si and ipmi_devintf), describes it for the
// inventory and, when the controller's boot asked for it, enrolls it: it
// creates (or takes back) an IPMI user for anvil with a fresh random
// password, administrator privilege and IPMI messaging on the BMC's LAN
// channel, so that the controller can switch the machine's power with no
// operator input (the address and the credential go to the controller on
// the authenticated Register only).
//
// Commands, from IPMI v2.0 rev 1.1: Get Device ID (§20.1), Get Channel
// Info (§22.24), Get LAN Configuration Parameters (§23.2: 3 IP address,
// 4 IP source, 5 MAC, 6 subnet mask, 12 default gateway, 20 802.1q VLAN
// ID), Get User Access (§22.27), Get/Set User Name (§22.28/22.29), Set
// User Password (§22.30: set with the 20-byte form, enable, test), Set
// User Access (§22.26).
//
// User slots: user 1 is the anonymous (null) user and user 2 the
// vendor's administrator on almost every BMC; neither is ever touched.
// A slot already named User is reused (a reinstall rotates the password
// rather than taking a new slot); else the first slot from 3 with an
// empty name. A BMC with no free slot is an error, never an overwrite.
//
// The commands are carried by github.com/bougou/go-ipmi: its Linux "open"
// interface speaks the OpenIPMI device's ioctls (pure Go), and the same
// client type speaks RMCP+ over LAN, which is how the tests drive OpenIPMI's
// simulator.
package bmcenroll

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/bougou/go-ipmi/pkg/command/app"
	"github.com/bougou/go-ipmi/pkg/command/transport"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/anvil-metal/anvil/controller/bmc"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// User is the name of the BMC user anvil creates.
const User = bmc.InBandUser

// firstSlot is the first user ID enrollment may take (1 is the null user,
// 2 the vendor's administrator).
const firstSlot = 3

// Conn is the part of an IPMI client enrollment uses (go-ipmi's
// *client.Client over the open interface in production).
type Conn interface {
	GetDeviceID(ctx context.Context) (*app.GetDeviceIDResponse, error)
	GetChannelInfo(ctx context.Context, channel uint8) (*app.GetChannelInfoResponse, error)
	GetLanConfigParam(ctx context.Context, channel uint8, param types.LanConfigParamSelector, set, block uint8) (*transport.GetLanConfigParamResponse, error)
	GetUserAccess(ctx context.Context, channel, userID uint8) (*app.GetUserAccessResponse, error)
	GetUsername(ctx context.Context, userID uint8) (*app.GetUsernameResponse, error)
	SetUsername(ctx context.Context, userID uint8, name string) (*app.SetUsernameResponse, error)
	SetUserPassword(ctx context.Context, userID uint8, password string, stored20 bool) (*app.SetUserPasswordResponse, error)
	TestUserPassword(ctx context.Context, userID uint8, password string, stored20 bool) (*app.SetUserPasswordResponse, error)
	SetUserAccess(ctx context.Context, req *app.SetUserAccessRequest) (*app.SetUserAccessResponse, error)
	EnableUser(ctx context.Context, userID uint8) error
}

// ErrNoLANChannel is returned when the BMC has no 802.3 LAN channel: there
// is nothing the controller could reach.
var ErrNoLANChannel = errors.New("the BMC has no LAN channel")

// ErrNoFreeSlot is returned when every user slot from 3 holds another user.
var ErrNoFreeSlot = errors.New("the BMC has no free user slot")

// Describe reads what the BMC says of itself and of its first LAN channel.
// A LAN parameter the BMC does not support is left empty; the device ID
// and the channel are required.
func Describe(ctx context.Context, c Conn) (*anvilv1.BMC, error) {
	id, err := c.GetDeviceID(ctx)
	if err != nil {
		return nil, fmt.Errorf("BMC device ID: %w", err)
	}
	out := &anvilv1.BMC{
		Firmware:       fmt.Sprintf("%d.%02x", id.MajorFirmwareRevision, id.MinorFirmwareRevision),
		IpmiVersion:    fmt.Sprintf("%d.%d", id.MajorIPMIVersion, id.MinorIPMIVersion),
		ManufacturerId: id.ManufacturerID,
		ProductId:      uint32(id.ProductID),
	}
	ch, err := lanChannel(ctx, c)
	if err != nil {
		return nil, err
	}
	out.Channel = uint32(ch)
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_IP, 4); err != nil {
		return nil, err
	} else if ok && !net.IP(b).Equal(net.IPv4zero) {
		out.Ip = net.IP(b).String()
	}
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_IPSource, 1); err != nil {
		return nil, err
	} else if ok {
		out.IpSource = ipSource(b[0])
	}
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_MAC, 6); err != nil {
		return nil, err
	} else if ok {
		out.Mac = net.HardwareAddr(b).String()
	}
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_SubnetMask, 4); err != nil {
		return nil, err
	} else if ok && !net.IP(b).Equal(net.IPv4zero) {
		out.Netmask = net.IP(b).String()
	}
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_DefaultGatewayIP, 4); err != nil {
		return nil, err
	} else if ok && !net.IP(b).Equal(net.IPv4zero) {
		out.Gateway = net.IP(b).String()
	}
	if b, ok, err := lanParam(ctx, c, ch, types.LanConfigParamSelector_VLANID, 2); err != nil {
		return nil, err
	} else if ok {
		out.Vlan = vlan(b)
	}
	return out, nil
}

// lanChannel is the first channel (1 to 11, IPMI §6.3) whose medium is
// 802.3 LAN.
func lanChannel(ctx context.Context, c Conn) (uint8, error) {
	var errs []error
	for ch := uint8(1); ch <= 11; ch++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		info, err := c.GetChannelInfo(ctx, ch)
		if err != nil {
			// Channels that do not exist answer with an error
			// (completion code CCh); only all of them failing says
			// something.
			errs = append(errs, fmt.Errorf("channel %d: %w", ch, err))
			continue
		}
		if info.ChannelMedium == types.ChannelMediumLAN {
			return ch, nil
		}
	}
	return 0, fmt.Errorf("%w (channels 1 to 11 asked): %w", ErrNoLANChannel, errors.Join(errs...))
}

// lanParam reads LAN parameter p of channel ch. ok is false when the BMC
// does not support the parameter (completion code 80h, IPMI §23.2); an
// answer shorter than want bytes is a protocol error.
func lanParam(ctx context.Context, c Conn, ch uint8, p types.LanConfigParamSelector, want int) ([]byte, bool, error) {
	r, err := c.GetLanConfigParam(ctx, ch, p, 0, 0)
	if err != nil {
		if re, ok := types.IsResponseError(err); ok && uint8(re.CompletionCode()) == 0x80 {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("BMC LAN parameter %s of channel %d: %w", p, ch, err)
	}
	if len(r.ParamData) < want {
		return nil, false, fmt.Errorf("BMC LAN parameter %s of channel %d: %d bytes, want %d", p, ch, len(r.ParamData), want)
	}
	return r.ParamData[:want], true, nil
}

// ipSource names LAN parameter 4's low nibble.
func ipSource(b byte) string {
	switch b & 0x0f {
	case 1:
		return "static"
	case 2:
		return "dhcp"
	case 3:
		return "bios"
	case 0:
		return ""
	}
	return "other"
}

// vlan decodes LAN parameter 20: ID in bits 11:0, enabled in bit 15.
func vlan(b []byte) uint32 {
	v := uint16(b[0]) | uint16(b[1])<<8
	if v&0x8000 == 0 {
		return 0
	}
	return uint32(v & 0x0fff)
}

// Enroll creates or updates User on channel ch with password: named, with
// the password set in the 20-byte form, administrator on the channel with
// IPMI messaging and link authentication, enabled, and the password tested
// back. It returns the user ID.
func Enroll(ctx context.Context, c Conn, ch uint8, password string) (uint8, error) {
	if l := len(password); l < 8 || l > 20 {
		return 0, fmt.Errorf("BMC password of %d bytes: want 8 to 20 (IPMI v2.0 §22.30)", l)
	}
	id, isNew, err := slot(ctx, c, ch)
	if err != nil {
		return 0, err
	}
	if isNew {
		if _, err := c.SetUsername(ctx, id, User); err != nil {
			return 0, fmt.Errorf("name BMC user %d %q: %w", id, User, err)
		}
	}
	if _, err := c.SetUserPassword(ctx, id, password, true); err != nil {
		return 0, fmt.Errorf("set the password of BMC user %d: %w", id, err)
	}
	if _, err := c.SetUserAccess(ctx, &app.SetUserAccessRequest{EnableChanging: true, EnableLinkAuth: true, EnableIPMIMessaging: true,
		ChannelNumber: ch, UserID: id, MaxPrivLevel: uint8(types.PrivilegeLevelAdministrator)}); err != nil {
		return 0, fmt.Errorf("give BMC user %d administrator access on channel %d: %w", id, ch, err)
	}
	if err := c.EnableUser(ctx, id); err != nil {
		return 0, fmt.Errorf("enable BMC user %d: %w", id, err)
	}
	if _, err := c.TestUserPassword(ctx, id, password, true); err != nil {
		return 0, fmt.Errorf("test the new password of BMC user %d: %w", id, err)
	}
	return id, nil
}

// slot finds User's slot, or the first free one from firstSlot.
func slot(ctx context.Context, c Conn, ch uint8) (id uint8, isNew bool, err error) {
	acc, err := c.GetUserAccess(ctx, ch, 1)
	if err != nil {
		return 0, false, fmt.Errorf("BMC user count on channel %d: %w", ch, err)
	}
	// Bits 5:0 (IPMI §22.27); at most 63 users.
	max := acc.MaxUsersIDCount & 0x3f
	var free uint8
	for i := uint8(firstSlot); i <= max; i++ {
		if err := ctx.Err(); err != nil {
			return 0, false, err
		}
		n, err := c.GetUsername(ctx, i)
		name := ""
		if err != nil {
			// An unset name may answer "invalid data field" (CCh).
			if re, ok := types.IsResponseError(err); !ok || uint8(re.CompletionCode()) != 0xcc {
				return 0, false, fmt.Errorf("name of BMC user %d: %w", i, err)
			}
		} else {
			name = strings.TrimRight(n.Username, "\x00 ")
		}
		switch {
		case name == User:
			return i, false, nil
		case name == "" && free == 0:
			free = i
		}
	}
	if free == 0 {
		return 0, false, fmt.Errorf("%w (users %d to %d named)", ErrNoFreeSlot, firstSlot, max)
	}
	return free, true, nil
}
