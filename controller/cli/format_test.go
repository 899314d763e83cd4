package cli

import (
	"slices"
	"testing"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1536", want: 1536},
		{in: "4GiB", want: 4 << 30},
		{in: "4gib", want: 4 << 30},
		{in: "4Gi", want: 4 << 30},
		{in: "500G", want: 500e9},
		{in: "500GB", want: 500e9},
		{in: "1TiB", want: 1 << 40},
		{in: "1.5TiB", want: 3 << 39},
		{in: "2 T", want: 2e12},
		{in: "512B", want: 512},
		{in: "16EiB", wantErr: true},
		{in: "18446744073709551616", wantErr: true},
		{in: "GiB", wantErr: true},
		{in: "4 GiBs", wantErr: true},
		{in: "1.2.3G", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := parseBytes(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestExactBytesRoundTrips(t *testing.T) {
	for _, n := range []uint64{0, 1, 1000, 1024, 1536, 4 << 30, 500e9, 2e12, 3 << 39, 960197124096, 1<<64 - 1} {
		s := exactBytes(n)
		back, err := parseBytes(s)
		if err != nil || back != n {
			t.Errorf("exactBytes(%d) = %q, parses back as %d, %v", n, s, back, err)
		}
	}
	for n, want := range map[uint64]string{4 << 30: "4GiB", 500e9: "500G", 2e12: "2T", 1536: "1536", 3 << 39: "1536GiB"} {
		if got := exactBytes(n); got != want {
			t.Errorf("exactBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1288490189: "1.2 GiB", 68 << 20: "68 MiB", 2 << 30: "2.0 GiB", 10<<30 - 1: "10 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		p    *anvilv1.Progress
		want string
	}{
		{nil, ""},
		{&anvilv1.Progress{BytesDone: 1288490189, BytesTotal: 2 << 30, RateBytesPerSecond: 68 << 20},
			"[############........] 60% 1.2 GiB/2.0 GiB 68 MiB/s ETA 13s"},
		{&anvilv1.Progress{BytesDone: 0, BytesTotal: 1 << 30}, "[....................] 0% 0 B/1.0 GiB"},
		{&anvilv1.Progress{BytesDone: 1 << 30, BytesTotal: 1 << 30, RateBytesPerSecond: 1 << 20}, "[####################] 100% 1.0 GiB/1.0 GiB 1.0 MiB/s"},
		{&anvilv1.Progress{BytesDone: 3 << 30, RateBytesPerSecond: 100 << 20}, "3.0 GiB 100 MiB/s"},
		{&anvilv1.Progress{BytesDone: 0, BytesTotal: 600 << 20, RateBytesPerSecond: 1 << 20}, "[....................] 0% 0 B/600 MiB 1.0 MiB/s ETA 10m0s"},
	} {
		if got := progressLine(tc.p); got != tc.want {
			t.Errorf("progressLine(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestEnums(t *testing.T) {
	for e, want := range map[anvilv1.MachineState]string{
		anvilv1.MachineState_MACHINE_STATE_READY:       "Ready",
		anvilv1.MachineState_MACHINE_STATE_PXE_BOOTING: "PXE Booting",
		anvilv1.MachineState_MACHINE_STATE_UNSPECIFIED: "",
		anvilv1.MachineState(99):                       "99",
	} {
		if got := title(e); got != want {
			t.Errorf("title(%v) = %q, want %q", e, got, want)
		}
	}
	for _, in := range []string{"raw-zstd", "RAW_ZSTD", "Raw Zstd", "IMAGE_FORMAT_RAW_ZSTD"} {
		if got, err := parseEnum[anvilv1.ImageFormat](in); err != nil || got != anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD {
			t.Errorf("parseEnum(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"unspecified", "IMAGE_FORMAT_UNSPECIFIED", "zip", ""} {
		if got, err := parseEnum[anvilv1.ImageFormat](in); err == nil {
			t.Errorf("parseEnum(%q) = %v, want an error", in, got)
		}
	}
	if got := kebab(anvilv1.ImageFormat_IMAGE_FORMAT_TAR_GZIP); got != "tar-gzip" {
		t.Errorf("kebab = %q", got)
	}
}

func TestConstraintRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		typ  anvilv1.ConstraintType
		in   string
		want string
	}{
		{anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, "8", "8"},
		{anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, "8-16:Intel(R) Xeon*", "8-16:Intel(R) Xeon*"},
		{anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY, "64GiB-128GiB", "64GiB-128GiB"},
		{anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE, "1000G-2TB", "1T-2T"},
		{anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU, "0", "0"},
	} {
		c, err := parseConstraint(tc.typ, tc.in)
		if err != nil {
			t.Errorf("parseConstraint(%q): %v", tc.in, err)
			continue
		}
		if got := formatConstraint(c); got != tc.want {
			t.Errorf("formatConstraint(parseConstraint(%q)) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantPos []string
		wantO   string
		wantW   bool
	}{
		{[]string{"a", "-o", "json", "b"}, []string{"a", "b"}, "json", false},
		{[]string{"--watch", "a"}, []string{"a"}, "", true},
		{[]string{"a", "--", "-o", "b"}, []string{"a", "-o", "b"}, "", false},
		{nil, nil, "", false},
	} {
		fs := newFlagSet("t")
		o := fs.String("o", "", "")
		w := fs.Bool("watch", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.wantPos) || *o != tc.wantO || *w != tc.wantW {
			t.Errorf("%q: pos %q o %q watch %v err %v", tc.args, pos, *o, *w, err)
		}
	}
	fs := newFlagSet("t")
	if _, err := parseInterspersed(fs, []string{"a", "--bogus"}); err == nil {
		t.Error("unknown flag after a positional argument accepted")
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 59 * time.Second: "59s", 90 * time.Second: "1m", 47 * time.Hour: "47h", 49 * time.Hour: "2d"} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}
