package bmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// redfishSystem is a test Redfish service with one ComputerSystem,
// following the DMTF schema for the resources the driver uses.
type redfishSystem struct {
	mu       sync.Mutex
	power    string
	target   string
	enabled  string
	mode     string
	allowed  []string
	requests []string // method path [ResetType]
	garbage  bool
}

func (s *redfishSystem) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if !ok || user != "root" || pass != "calvin" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	line := r.Method + " " + r.URL.Path
	defer func() { s.requests = append(s.requests, line) }()
	if s.garbage {
		fmt.Fprint(w, "<html>not json")
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems":
		json.NewEncoder(w).Encode(map[string]any{"Members": []map[string]string{{"@odata.id": "/redfish/v1/Systems/1"}}}) //nolint:errcheck // test server
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems/1":
		json.NewEncoder(w).Encode(map[string]any{ //nolint:errcheck // test server
			"@odata.id":  "/redfish/v1/Systems/1",
			"PowerState": s.power,
			"Boot":       map[string]string{"BootSourceOverrideTarget": s.target, "BootSourceOverrideEnabled": s.enabled, "BootSourceOverrideMode": s.mode},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", "ResetType@Redfish.AllowableValues": s.allowed}},
		})
	case r.Method == http.MethodPatch && r.URL.Path == "/redfish/v1/Systems/1":
		var body struct {
			Boot map[string]string `json:"Boot"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.target, s.enabled, s.mode = body.Boot["BootSourceOverrideTarget"], body.Boot["BootSourceOverrideEnabled"], body.Boot["BootSourceOverrideMode"]
		line += " " + s.target + "/" + s.enabled + "/" + s.mode
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if json.NewDecoder(r.Body).Decode(&body) != nil || !slices.Contains(s.allowed, body.ResetType) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"message":"x","@Message.ExtendedInfo":[{"Message":"The reset type is not supported."}]}}`)
			return
		}
		line += " " + body.ResetType
		switch body.ResetType {
		case "On", "ForceOn":
			s.power = "On"
		case "ForceOff", "GracefulShutdown":
			s.power = "Off"
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func redfishDriver(t *testing.T, srv *httptest.Server, creds, path string) Driver {
	t.Helper()
	d, err := Open("redfish+http://"+creds+"@"+strings.TrimPrefix(srv.URL, "http://")+path, WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRedfishAgainstTestService(t *testing.T) {
	sys := &redfishSystem{power: "Off", enabled: "Disabled", allowed: []string{"On", "ForceOff", "GracefulRestart", "PowerCycle"}}
	srv := httptest.NewServer(sys)
	defer srv.Close()
	d := redfishDriver(t, srv, "root:calvin", "")
	ctx := context.Background()
	want := func(power PowerState, boot BootDevice) {
		t.Helper()
		st, err := d.Status(ctx)
		if err != nil || st.Power != power || st.NextBoot != boot {
			t.Fatalf("status %+v, %v; want %v, %v", st, err, power, boot)
		}
	}
	want(PowerOff, BootUnspecified)
	if err := d.SetNextBoot(ctx, BootPXE); err != nil {
		t.Fatal(err)
	}
	want(PowerOff, BootPXE)
	if err := d.Reset(ctx); err != nil { // off: powered on
		t.Fatal(err)
	}
	want(PowerOn, BootPXE)
	if err := d.Reset(ctx); err != nil { // on: the advertised restart (no ForceRestart here: PowerCycle)
		t.Fatal(err)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	want(PowerOff, BootPXE)
	var acts []string
	for _, r := range sys.requests {
		if !strings.HasPrefix(r, "GET ") {
			acts = append(acts, r)
		}
	}
	wantActs := []string{
		"PATCH /redfish/v1/Systems/1 Pxe/Once/UEFI",
		"POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset On",
		"POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset PowerCycle",
		"POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset ForceOff",
	}
	if !slices.Equal(acts, wantActs) {
		t.Fatalf("actions %q, want %q", acts, wantActs)
	}
}

func TestRedfishRefusals(t *testing.T) {
	sys := &redfishSystem{power: "On", enabled: "Disabled", allowed: []string{"On"}}
	srv := httptest.NewServer(sys)
	defer srv.Close()
	ctx := context.Background()
	// No restart type advertised: a clear refusal, nothing posted.
	err := redfishDriver(t, srv, "root:calvin", "/redfish/v1/Systems/1").Reset(ctx)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "none of") {
		t.Fatalf("reset with no allowed restart type: %v", err)
	}
	// A wrong password: ErrAuth after one request, the password not shown.
	n := len(sys.requests)
	err = redfishDriver(t, srv, "root:wrongpw", "").PowerOn(ctx)
	if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), "wrongpw") || len(sys.requests) != n {
		t.Fatalf("wrong password: %v (%d requests)", err, len(sys.requests)-n)
	}
	// A BMC answering garbage: a protocol error.
	sys.garbage = true
	if _, err := redfishDriver(t, srv, "root:calvin", "/redfish/v1/Systems/1").Status(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage answer: %v, want ErrProtocol", err)
	}
	// Nobody listening: unreachable, bounded.
	srv.Close()
	start := time.Now()
	if _, err := redfishDriver(t, srv, "root:calvin", "").Status(ctx); !errors.Is(err, ErrUnreachable) || time.Since(start) > 4*time.Second {
		t.Fatalf("closed service: %v after %v", err, time.Since(start))
	}
}

func TestParseRedfishAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		err  string
	}{
		{in: "redfish://root:calvin@10.0.0.5", want: Address{Scheme: "redfish", Host: "10.0.0.5", User: "root", Password: "calvin", httpScheme: "https"}},
		{in: "redfish+http://root:calvin@[fd00::1]:8000/redfish/v1/Systems/System.Embedded.1?boot=legacy", want: Address{Scheme: "redfish+http", Host: "fd00::1", Port: 8000,
			User: "root", Password: "calvin", Path: "/redfish/v1/Systems/System.Embedded.1", LegacyBoot: true, httpScheme: "http"}},
		{in: "redfish://root:calvin@bmc?insecure=true", want: Address{Scheme: "redfish", Host: "bmc", User: "root", Password: "calvin", Insecure: true, httpScheme: "https"}},
		{in: "redfish://10.0.0.5", err: "needs a user"},
		{in: "redfish://root:calvin@10.0.0.5/redfish/v1/Managers/1", err: "must be a system"},
		{in: "redfish://root:calvin@10.0.0.5/redfish/v1/Systems/1/../2", err: "must be a system"},
		{in: "redfish://root:calvin@10.0.0.5?insecure=yes", err: "insecure="},
		{in: "redfish://root:calvin@10.0.0.5?x=1", err: "unknown parameter"},
	} {
		a, err := ParseAddress(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalidAddress) || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "calvin") {
				t.Errorf("%q: %v, want an invalid-address error about %q without the password", tc.in, err, tc.err)
			}
			continue
		}
		a.raw = nil
		if err != nil || a != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, a, err, tc.want)
		}
	}
}
