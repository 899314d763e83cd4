package tinyinit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/agent/bootenv"
	"github.com/anvil-metal/anvil/images/nocloud"
)

func TestBody(t *testing.T) {
	tests := []struct {
		f    Facts
		want string
	}{
		{Facts{Hostname: "web-1", InstanceID: "i-1", Kernel: "6.1.0-57-cloud-amd64", Version: "v1", Addresses: []string{"eth0=10.0.2.15/24"}},
			"tiny image up: hostname web-1, kernel 6.1.0-57-cloud-amd64, instance-id i-1, address eth0=10.0.2.15/24, anvil-tiny v1"},
		{Facts{}, "tiny image up: hostname (unknown), kernel (unknown), anvil-tiny (unknown)"},
		{Facts{Hostname: "a\nb", Kernel: "k", Version: "v"}, "tiny image up: hostname a b, kernel k, anvil-tiny v"},
	}
	for _, tc := range tests {
		if got := Body(tc.f); got != tc.want {
			t.Errorf("Body(%+v) =\n%q, want\n%q", tc.f, got, tc.want)
		}
	}
}

func TestBackoffNext(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for d := time.Duration(0); len(got) < 6; {
		d = b.Next(d)
		got = append(got, d)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

func TestParseUptime(t *testing.T) {
	if d, err := parseUptime("5.56 9.80\n"); err != nil || d != 5560*time.Millisecond {
		t.Errorf("parseUptime = %v, %v", d, err)
	}
	for _, bad := range []string{"", "x 1"} {
		if _, err := parseUptime(bad); err == nil {
			t.Errorf("parseUptime(%q): no error", bad)
		}
	}
}

func TestSeedDevices(t *testing.T) {
	got := seedDevices([]string{"loop0", "nvme0n1", "ram0", "sr0", "vda", "zram0", "nbd0"})
	if want := []string{"/dev/nvme0n1", "/dev/sr0", "/dev/vda"}; !slices.Equal(got, want) {
		t.Errorf("seedDevices = %v, want %v", got, want)
	}
}

func TestAddresses(t *testing.T) {
	got := addresses([]bootenv.Lease{{Interface: "eth0", Address: "10.0.2.15/24"}, {Interface: "eth1"}})
	if want := []string{"eth0=10.0.2.15/24"}; !slices.Equal(got, want) {
		t.Errorf("addresses = %v, want %v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	bad := Config{Backoff: Backoff{Min: 2 * time.Second, Max: time.Second, Timeout: -1}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "backoff") || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("Validate(%+v) = %v", bad, err)
	}
}

func TestConsoleHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(NewConsoleHandler(&b, slog.LevelInfo))
	log.Info("phoned home", "url", "http://10.0.2.2:1/phone-home", "attempts", 2, "uptime", 5561234*time.Microsecond)
	log.Warn("no seed", "why", errors.New("no NoCloud seed on /dev/vda"))
	log.Debug("hidden")
	log.With("phase", "boot").WithGroup("g").Info("grouped", "k", "", slog.Group("sub", "x", 1))
	want := `anvil-tiny: phoned home url=http://10.0.2.2:1/phone-home attempts=2 uptime=5.561s
anvil-tiny: WARN: no seed why="no NoCloud seed on /dev/vda"
anvil-tiny: grouped phase=boot g.k="" g.sub.x=1
`
	if b.String() != want {
		t.Errorf("console:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestPhoneHome runs the client against a real HTTP server on loopback:
// it sends the bearer token and the body, retries 503 and 401 answers with
// backoff, and stops at 200.
func TestPhoneHome(t *testing.T) {
	var (
		mu    sync.Mutex
		auths []string
		body  string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		auths = append(auths, r.Header.Get("Authorization"))
		body = string(b)
		switch len(auths) {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			http.Error(w, "who?", http.StatusUnauthorized)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	var logs bytes.Buffer
	log := slog.New(NewConsoleHandler(&logs, slog.LevelInfo))
	p := nocloud.PhoneHome{URL: srv.URL + "/phone-home", Token: "anvp_t"}
	n, err := PhoneHome(context.Background(), srv.Client(), p, "tiny image up", Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond, Timeout: time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(auths) != 3 {
		t.Errorf("%d attempts, server saw %d, want 3", n, len(auths))
	}
	for _, a := range auths {
		if a != "Bearer anvp_t" {
			t.Errorf("Authorization %q", a)
		}
	}
	if body != "tiny image up" {
		t.Errorf("body %q", body)
	}
	if !strings.Contains(logs.String(), "503 Service Unavailable: busy") || !strings.Contains(logs.String(), "401 Unauthorized: who?") {
		t.Errorf("retries not logged with the answers:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "anvp_t") {
		t.Errorf("the token was logged:\n%s", logs.String())
	}
}

func TestPhoneHomeStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var logs bytes.Buffer
	n, err := PhoneHome(ctx, srv.Client(), nocloud.PhoneHome{URL: srv.URL, Token: "t"}, "x",
		Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	// The deadline may fall inside an attempt (on a loaded machine it
	// often does), so the last attempt's error is either the server's
	// answer or the deadline; the earlier ones were the server's answer.
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last attempt") {
		t.Errorf("PhoneHome after the deadline: %v, want DeadlineExceeded and the last attempt's error", err)
	}
	if n < 2 || !strings.Contains(logs.String(), "502 Bad Gateway: down") {
		t.Errorf("%d attempts; the retries were not logged with the server's answer:\n%s", n, logs.String())
	}
}
