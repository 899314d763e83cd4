package phonehome

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"

	"github.com/anvil-metal/anvil/agent/image/fatfs"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name, in, wantErr string
		want              Config
	}{
		{"ok", `{"url":"https://anvil.example:8080/phone-home","token":"t0k"}`, "", Config{"https://anvil.example:8080/phone-home", "t0k"}},
		{"http", `{"url":"http://10.0.2.2:1234/phone-home","token":"x"}`, "", Config{"http://10.0.2.2:1234/phone-home", "x"}},
		{"no url", `{"token":"x"}`, "empty url", Config{}},
		{"scheme", `{"url":"ftp://h/x","token":"x"}`, "want http(s)://host", Config{}},
		{"no host", `{"url":"http:///x","token":"x"}`, "want http(s)://host", Config{}},
		{"no token", `{"url":"http://h/x"}`, "token empty", Config{}},
		{"token newline", `{"url":"http://h/x","token":"a\nb"}`, "spanning lines", Config{}},
		{"both", `{}`, "empty url", Config{}},
		{"not json", `url=x`, "parse anvil/phone-home.json", Config{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	if _, err := ParseConfig([]byte(`{}`)); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("an empty config should report url and token: %v", err)
	}
}

func TestNote(t *testing.T) {
	if got, want := Note("debian-12", "web-1", "6.1.0-57-cloud-amd64"), "debian-12 up: hostname web-1, kernel 6.1.0-57-cloud-amd64"; got != want {
		t.Errorf("Note = %q, want %q", got, want)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Minute}
	cases := []struct {
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 0.999999999, time.Second - time.Nanosecond},
		{2, 0, time.Second},
		{3, 0.5, 3 * time.Second},
		{7, 0, 30 * time.Second}, // 64 s capped to 60
		{100, 0, 30 * time.Second},
	}
	for _, c := range cases {
		if got := b.Wait(c.attempt, func() float64 { return c.rnd }); got.Round(time.Millisecond) != c.want.Round(time.Millisecond) {
			t.Errorf("Wait(%d, %v) = %v, want %v", c.attempt, c.rnd, got, c.want)
		}
	}
}

func TestReportRetriesUntilOK(t *testing.T) {
	var mu sync.Mutex
	var auths, bodies []string
	codes := []int{http.StatusServiceUnavailable, http.StatusUnauthorized, http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/phone-home" {
			http.Error(w, "wrong request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		auths = append(auths, r.Header.Get("Authorization"))
		bodies = append(bodies, string(b))
		code := codes[len(auths)-1]
		w.WriteHeader(code)
		io.WriteString(w, "ok m-1\n")
	}))
	defer srv.Close()
	var slept []time.Duration
	r := Reporter{
		Client: srv.Client(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: Backoff{Initial: time.Second, Max: time.Minute},
		Rand:    func() float64 { return 0 },
		Sleep:   func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
	}
	n, reply, err := r.Report(context.Background(), Config{URL: srv.URL + "/phone-home", Token: "s3cret"}, "debian-12 up")
	if err != nil || n != 3 || reply != "ok m-1" {
		t.Fatalf("Report = %d, %q, %v; want 3 attempts, ok m-1", n, reply, err)
	}
	for i, a := range auths {
		if a != "Bearer s3cret" || bodies[i] != "debian-12 up\n" {
			t.Errorf("attempt %d: Authorization %q body %q", i+1, a, bodies[i])
		}
	}
	if len(slept) != 2 || slept[0] != 500*time.Millisecond || slept[1] != time.Second {
		t.Errorf("waits %v, want [500ms 1s]", slept)
	}
}

func TestReportGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such token", http.StatusUnauthorized)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	attempts := 0
	r := Reporter{
		Client: srv.Client(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond},
		Sleep: func(ctx context.Context, d time.Duration) error {
			if attempts++; attempts == 3 {
				cancel()
			}
			return ctx.Err()
		},
	}
	n, _, err := r.Report(ctx, Config{URL: srv.URL, Token: "x"}, "n")
	var se *StatusError
	if n != 3 || !errors.Is(err, context.Canceled) || !errors.As(err, &se) || se.Code != http.StatusUnauthorized || se.Body != "no such token" {
		t.Fatalf("Report = %d, %v; want 3 attempts, canceled, last HTTP 401", n, err)
	}
}

// fatImage makes a FAT32 filesystem labelled label in a file of 40 MiB.
func fatImage(t *testing.T, dir, name, label string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 40 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := fatfs.Create(file.New(f, false), size, 0, 512, label, false); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFATLabel(t *testing.T) {
	dir := t.TempDir()
	bs := make([]byte, 512)
	f, err := os.Open(fatImage(t, dir, "seed", "CIDATA"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, bs); err != nil {
		t.Fatal(err)
	}
	if l, ok := FATLabel(bs); !ok || l != "CIDATA" {
		t.Errorf("FAT32 label %q, %v; want CIDATA", l, ok)
	}
	// A FAT16 boot sector (mkfs.fat -F 16 -n CIDATA, fields as §3.2).
	f16 := make([]byte, 512)
	f16[11], f16[12] = 0, 2 // 512 bytes per sector
	f16[22] = 32            // BPB_FATSz16
	f16[38] = 0x29
	copy(f16[43:], "cidata     ")
	f16[510], f16[511] = 0x55, 0xAA
	if l, ok := FATLabel(f16); !ok || l != "cidata" {
		t.Errorf("FAT16 label %q, %v; want cidata", l, ok)
	}
	for name, b := range map[string][]byte{"short": bs[:100], "no signature": make([]byte, 512)} {
		if _, ok := FATLabel(b); ok {
			t.Errorf("%s: FATLabel ok", name)
		}
	}
}

func TestFindSeed(t *testing.T) {
	t.Run("udev link", func(t *testing.T) {
		root := t.TempDir()
		mkdir(t, root, "dev/disk/by-label")
		if err := os.WriteFile(filepath.Join(root, "dev/vda3"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../vda3", filepath.Join(root, "dev/disk/by-label/CIDATA")); err != nil {
			t.Fatal(err)
		}
		dev, mark, err := FindSeed(root)
		if err != nil || dev != filepath.Join(root, "dev/vda3") || mark != "/dev/disk/by-label/CIDATA" {
			t.Fatalf("FindSeed = %q, %q, %v", dev, mark, err)
		}
	})
	t.Run("partlabel", func(t *testing.T) {
		root := t.TempDir()
		mkdir(t, root, "dev/disk/by-partlabel")
		if err := os.WriteFile(filepath.Join(root, "dev/nvme0n1p3"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../nvme0n1p3", filepath.Join(root, "dev/disk/by-partlabel/cidata")); err != nil {
			t.Fatal(err)
		}
		if dev, _, err := FindSeed(root); err != nil || filepath.Base(dev) != "nvme0n1p3" {
			t.Fatalf("FindSeed = %q, %v", dev, err)
		}
	})
	t.Run("scan without udev", func(t *testing.T) {
		root := t.TempDir()
		mkdir(t, root, "dev")
		for _, n := range []string{"vda", "vda1", "vda2", "vda3", "sr0"} {
			mkdir(t, root, "sys/class/block/"+n)
		}
		fatImage(t, filepath.Join(root, "dev"), "vda1", "ESP")
		fatImage(t, filepath.Join(root, "dev"), "vda3", "CIDATA")
		for _, n := range []string{"vda", "vda2"} {
			if err := os.WriteFile(filepath.Join(root, "dev", n), make([]byte, 4096), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// sr0 has no device node here: unreadable, passed over.
		dev, mark, err := FindSeed(root)
		if err != nil || dev != filepath.Join(root, "dev/vda3") || mark != "FAT label CIDATA" {
			t.Fatalf("FindSeed = %q, %q, %v", dev, mark, err)
		}
	})
	t.Run("none", func(t *testing.T) {
		root := t.TempDir()
		mkdir(t, root, "sys/class/block/vda")
		mkdir(t, root, "dev")
		if err := os.WriteFile(filepath.Join(root, "dev/vda"), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := FindSeed(root); !errors.Is(err, ErrNoSeed) {
			t.Fatalf("FindSeed err %v, want ErrNoSeed", err)
		}
		if _, _, err := FindSeed(t.TempDir()); !errors.Is(err, ErrNoSeed) {
			t.Fatalf("empty root: err %v, want ErrNoSeed", err)
		}
	})
}

func mkdir(t *testing.T, root, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
		t.Fatal(err)
	}
}
