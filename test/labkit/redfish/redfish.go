// Package redfish is a small DMTF Redfish service (DSP0266) for one
// ComputerSystem, for the lab and for tests: the ServiceRoot, the Systems
// collection and the system itself with PowerState, the Boot override
// properties and the #ComputerSystem.Reset action, behind HTTP basic
// authentication. The power itself is a Backend's: in the lab the VM's
// QEMU over QMP (the role sushy-tools plays for libvirt), in tests memory.
package redfish

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
)

// Backend switches the machine behind the service.
type Backend interface {
	// PowerOn reports whether the machine is on.
	PowerOn(ctx context.Context) (bool, error)
	SetPower(ctx context.Context, on bool) error
	// Restart resets a running machine.
	Restart(ctx context.Context) error
	// SetBoot sets the next boot device: "Pxe" or "Hdd".
	SetBoot(ctx context.Context, target string) error
}

// SystemPath is the one ComputerSystem's path.
const SystemPath = "/redfish/v1/Systems/1"

// Service serves one system. Set Allowed to the reset types it advertises
// (default On, ForceOff, ForceRestart, GracefulShutdown, PowerCycle).
type Service struct {
	Backend        Backend
	User, Password string
	Allowed        []string

	mu                    sync.Mutex
	target, enabled, mode string
	actions               []string
}

// Actions are the changes the service carried out, in order: "boot
// TARGET/ENABLED/MODE" and "reset TYPE".
func (s *Service) Actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.actions)
}

func (s *Service) allowed() []string {
	if len(s.Allowed) > 0 {
		return s.Allowed
	}
	return []string{"On", "ForceOff", "ForceRestart", "GracefulShutdown", "PowerCycle"}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// fail answers with a Redfish error body.
func fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{ //nolint:errcheck // the client went away
		"code": "Base.1.0.GeneralError", "message": msg, "@Message.ExtendedInfo": []map[string]string{{"Message": msg}}}})
}

// ServeHTTP implements http.Handler.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != s.User || p != s.Password {
		w.Header().Set("WWW-Authenticate", `Basic realm="redfish"`)
		fail(w, http.StatusUnauthorized, "authentication required")
		return
	}
	ctx := r.Context()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1":
		writeJSON(w, map[string]any{"@odata.id": "/redfish/v1", "RedfishVersion": "1.6.0", "Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"}})
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems":
		writeJSON(w, map[string]any{"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1, "Members": []map[string]string{{"@odata.id": SystemPath}}})
	case r.Method == http.MethodGet && r.URL.Path == SystemPath:
		on, err := s.Backend.PowerOn(ctx)
		if err != nil {
			fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		power := "Off"
		if on {
			power = "On"
		}
		s.mu.Lock()
		boot := map[string]any{"BootSourceOverrideTarget": orNone(s.target), "BootSourceOverrideEnabled": orDisabled(s.enabled),
			"BootSourceOverrideMode": s.mode, "BootSourceOverrideTarget@Redfish.AllowableValues": []string{"None", "Pxe", "Hdd"}}
		s.mu.Unlock()
		writeJSON(w, map[string]any{"@odata.id": SystemPath, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Id": "1",
			"PowerState": power, "Boot": boot,
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target": SystemPath + "/Actions/ComputerSystem.Reset", "ResetType@Redfish.AllowableValues": s.allowed()}}})
	case r.Method == http.MethodPatch && r.URL.Path == SystemPath:
		var body struct {
			Boot struct {
				Target  string `json:"BootSourceOverrideTarget"`
				Enabled string `json:"BootSourceOverrideEnabled"`
				Mode    string `json:"BootSourceOverrideMode"`
			} `json:"Boot"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
			fail(w, http.StatusBadRequest, "malformed body: "+err.Error())
			return
		}
		if body.Boot.Target != "Pxe" && body.Boot.Target != "Hdd" {
			fail(w, http.StatusBadRequest, fmt.Sprintf("BootSourceOverrideTarget %q is not supported", body.Boot.Target))
			return
		}
		if err := s.Backend.SetBoot(ctx, body.Boot.Target); err != nil {
			fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.mu.Lock()
		s.target, s.enabled, s.mode = body.Boot.Target, body.Boot.Enabled, body.Boot.Mode
		s.actions = append(s.actions, "boot "+s.target+"/"+s.enabled+"/"+s.mode)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == SystemPath+"/Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
			fail(w, http.StatusBadRequest, "malformed body: "+err.Error())
			return
		}
		if !slices.Contains(s.allowed(), body.ResetType) {
			fail(w, http.StatusBadRequest, fmt.Sprintf("ResetType %q is not supported by this system", body.ResetType))
			return
		}
		var err error
		switch body.ResetType {
		case "On", "ForceOn":
			err = s.Backend.SetPower(ctx, true)
		case "ForceOff", "GracefulShutdown":
			err = s.Backend.SetPower(ctx, false)
		default:
			err = s.Backend.Restart(ctx)
		}
		if err != nil {
			fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.mu.Lock()
		s.actions = append(s.actions, "reset "+body.ResetType)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(w, http.StatusNotFound, "no resource "+r.Method+" "+r.URL.Path)
	}
}

func orNone(s string) string {
	if s == "" {
		return "None"
	}
	return s
}

func orDisabled(s string) string {
	if s == "" {
		return "Disabled"
	}
	return s
}
