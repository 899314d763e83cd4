package cli

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"gopkg.in/yaml.v3"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestGolden(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"machine-ls", []string{"machine", "ls"}},
		{"machine-show-installing", []string{"machine", "show", "m-installing"}},
		{"machine-show-failed", []string{"machine", "show", "m-failed"}},
		{"machine-events", []string{"machine", "events", "m-installing"}},
		{"machine-events-limit", []string{"machine", "events", "m-installing", "--limit", "2"}},
		{"machine-power-status", []string{"machine", "power", "m-ready", "status"}},
		{"machine-power-off", []string{"machine", "power", "m-ready", "off", "--next-boot", "disk"}},
		{"machine-bmc", []string{"machine", "bmc", "m-ready", "ipmi://admin:secret@192.0.2.21"}},
		{"image-ls", []string{"image", "ls"}},
		{"image-show", []string{"image", "show", "debian-12"}},
		{"size-ls", []string{"size", "ls"}},
		{"size-show", []string{"size", "show", "small"}},
	} {
		for _, format := range []string{"table", "json", "yaml"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				r := h.run(append(tc.args, "-o", format)...)
				if r.code != ExitOK || r.stderr != "" {
					t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
				}
				golden(t, filepath.Join("testdata", tc.name+"."+format), r.stdout)
			})
		}
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestJSONAndYAMLAreFaithful checks the machine-readable forms decode back
// into the same message.
func TestJSONAndYAMLAreFaithful(t *testing.T) {
	m := fixtureMachines()[0]
	js, err := marshalJSON(m, true)
	if err != nil {
		t.Fatal(err)
	}
	var back anvilv1.Machine
	if err := protojson.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, &back) {
		t.Errorf("JSON round trip changed the machine:\n%s", js)
	}
	m.Labels["enabled"] = "no" // a YAML 1.1 boolean
	y, err := marshalYAML(m)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := yaml.Unmarshal(y, &generic); err != nil {
		t.Fatal(err)
	}
	js, err = json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	back.Reset()
	if err := protojson.Unmarshal(js, &back); err != nil {
		t.Fatalf("YAML does not decode as the message: %v\n%s", err, y)
	}
	if !proto.Equal(m, &back) {
		t.Errorf("YAML round trip changed the machine:\n%s", y)
	}
	// Quoted where YAML 1.1 parsers would read another type.
	for _, want := range []string{"state: MACHINE_STATE_INSTALLING\n", `- "52:54:00:12:34:56"`, `enabled: "no"`, "model: SAMSUNG MZQL2960HCJR-00A07\n"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("YAML lacks %q:\n%s", want, y)
		}
	}
	if strings.Index(string(y), "uuid:") > strings.Index(string(y), "state:") {
		t.Error("YAML does not keep the field order")
	}
}

func TestRequests(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.pub")
	writeFile(t, keyFile, "# ops keys\nssh-ed25519 AAAAkey1 a@x\n\nssh-rsa AAAAkey2 b@y\n")
	userData := filepath.Join(dir, "user-data")
	writeFile(t, userData, "#cloud-config\npackages: [htop]\n")
	f := false
	for _, tc := range []struct {
		name       string
		args       []string
		want       proto.Message
		wantStdout string // prefix of the output, if set
	}{
		{
			name: "machine ls filters",
			args: []string{"machine", "ls", "--state", "installing", "--size", "small", "--allocated", "false",
				"--hostname", "web-1", "--label", "rack=r1", "--label", "role=worker,zone=a", "--liveliness", "dead"},
			want: &anvilv1.ListMachinesRequest{
				State: anvilv1.MachineState_MACHINE_STATE_INSTALLING, SizeId: "small", Allocated: &f, Hostname: "web-1",
				Liveliness: anvilv1.Liveliness_LIVELINESS_DEAD,
				Labels:     map[string]string{"rack": "r1", "role": "worker", "zone": "a"},
			},
		},
		{
			name: "machine ls proto enum name",
			args: []string{"machine", "ls", "--state", "MACHINE_STATE_PXE_BOOTING"},
			want: &anvilv1.ListMachinesRequest{State: anvilv1.MachineState_MACHINE_STATE_PXE_BOOTING},
		},
		{
			name: "allocate by size",
			args: []string{"machine", "allocate", "--size", "small", "--selector", "rack=r1", "--image", "debian-12",
				"--hostname", "web-1", "--ssh-key-file", keyFile, "--ssh-key", " ssh-ed25519 AAAAkey3 c@z ",
				"--user-data-file", userData, "--disk", "/dev/sda", "--cmdline", "console=ttyS0"},
			want: &anvilv1.AllocateMachineRequest{
				SizeId: "small", Selector: map[string]string{"rack": "r1"}, ImageId: "debian-12", Hostname: "web-1",
				SshPublicKeys:      []string{"ssh-ed25519 AAAAkey1 a@x", "ssh-rsa AAAAkey2 b@y", "ssh-ed25519 AAAAkey3 c@z"},
				UserData:           "#cloud-config\npackages: [htop]\n",
				TargetDisk:         "/dev/sda",
				ExtraKernelCmdline: "console=ttyS0",
			},
		},
		{
			name:       "allocate by id, global flag before the command",
			args:       []string{"-o", "json", "machine", "allocate", "--image", "debian-12", "m-ready"},
			want:       &anvilv1.AllocateMachineRequest{MachineId: "m-ready", ImageId: "debian-12"},
			wantStdout: "{\n  \"id\": \"m-installing\",",
		},
		{
			name: "free",
			args: []string{"machine", "free", "m-installing", "--erase", "secure"},
			want: &anvilv1.FreeMachineRequest{Id: "m-installing", EraseMode: anvilv1.EraseMode_ERASE_MODE_SECURE},
		},
		{
			name: "free default erase",
			args: []string{"machine", "free", "m-installing"},
			want: &anvilv1.FreeMachineRequest{Id: "m-installing"},
		},
		{
			name: "reinstall",
			args: []string{"machine", "reinstall", "m-installing", "--image", "debian-13"},
			want: &anvilv1.ReinstallMachineRequest{Id: "m-installing", ImageId: "debian-13"},
		},
		{
			name: "rm",
			args: []string{"machine", "rm", "m-ready"},
			want: &anvilv1.DeleteMachineRequest{Id: "m-ready"},
		},
		{
			name: "label merges and removes",
			args: []string{"machine", "label", "m-installing", "role=db", "env=prod", "rack-"},
			want: &anvilv1.SetMachineLabelsRequest{Id: "m-installing", Labels: map[string]string{"role": "db", "env": "prod"}},
		},
		{
			name: "power on with next boot",
			args: []string{"machine", "power", "m-ready", "on", "--next-boot", "pxe"},
			want: &anvilv1.PowerMachineRequest{Id: "m-ready", Action: anvilv1.PowerAction_POWER_ACTION_ON, NextBoot: anvilv1.BootDevice_BOOT_DEVICE_PXE},
		},
		{
			name: "power reset, flag first",
			args: []string{"machine", "power", "--next-boot", "disk", "m-ready", "reset"},
			want: &anvilv1.PowerMachineRequest{Id: "m-ready", Action: anvilv1.PowerAction_POWER_ACTION_RESET, NextBoot: anvilv1.BootDevice_BOOT_DEVICE_DISK},
		},
		{
			name: "power status",
			args: []string{"machine", "power", "m-ready", "status"},
			want: &anvilv1.PowerMachineRequest{Id: "m-ready", Action: anvilv1.PowerAction_POWER_ACTION_STATUS},
		},
		{
			name:       "bmc set",
			args:       []string{"machine", "bmc", "m-ready", "redfish://root:calvin@192.0.2.22/redfish/v1/Systems/1"},
			want:       &anvilv1.SetMachineBMCRequest{Id: "m-ready", Address: "redfish://root:calvin@192.0.2.22/redfish/v1/Systems/1"},
			wantStdout: "ID       BMC\nm-ready  redfish://root:xxxxx@192.0.2.22/redfish/v1/Systems/1\n",
		},
		{
			name: "bmc clear",
			args: []string{"machine", "bmc", "m-ready", "--clear"},
			want: &anvilv1.SetMachineBMCRequest{Id: "m-ready"},
		},
		{
			name: "image add",
			args: []string{"image", "add", "debian-13", "--url", "http://x/d.raw.gz", "--checksum", "sha256:" + strings.Repeat("0f", 32),
				"--format", "raw-gzip", "--feature", "machine", "--feature", "firewall", "--os", "debian", "--version", "13",
				"--description", "trixie"},
			want: &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
				Id: "debian-13", Url: "http://x/d.raw.gz", Checksum: "sha256:" + strings.Repeat("0f", 32),
				Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_GZIP,
				Features: []anvilv1.ImageFeature{
					anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE, anvilv1.ImageFeature_IMAGE_FEATURE_FIREWALL,
				},
				Os: "debian", Version: "13", Description: "trixie",
			}},
		},
		{
			name: "size add with ranges, units and globs",
			args: []string{"size", "add", "big", "--description", "2U", "--cores", "8-16:Intel*", "--memory", "64GiB-1.5TiB",
				"--storage", "500G:SAMSUNG*", "--storage", "4TB-8TB", "--gpu", "0"},
			want: &anvilv1.CreateSizeRequest{Size: &anvilv1.Size{
				Id: "big", Description: "2U",
				Constraints: []*anvilv1.Constraint{
					{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 8, Max: 16, ModelGlob: "Intel*"},
					{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY, Min: 64 << 30, Max: 1536 << 30},
					{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE, Min: 500e9, Max: 500e9, ModelGlob: "SAMSUNG*"},
					{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE, Min: 4e12, Max: 8e12},
					{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU},
				},
			}},
		},
		{
			name: "image rm",
			args: []string{"image", "rm", "debian-12"},
			want: &anvilv1.DeleteImageRequest{Id: "debian-12"},
		},
		{
			name: "size rm",
			args: []string{"size", "rm", "gpu"},
			want: &anvilv1.DeleteSizeRequest{Id: "gpu"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			r := h.run(tc.args...)
			checkRequest(t, h, r, tc.want)
			if !strings.HasPrefix(r.stdout, tc.wantStdout) {
				t.Errorf("output does not start with %q:\n%s", tc.wantStdout, r.stdout)
			}
		})
	}
}

func checkRequest(t *testing.T, h *harness, r result, want proto.Message) {
	t.Helper()
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := h.machines.rec.last()
	if !proto.Equal(got, want) {
		t.Errorf("request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"rack", "ls"}, `unknown command "rack"`},
		{[]string{"machine"}, "no subcommand"},
		{[]string{"machine", "bogus"}, `unknown subcommand "bogus"`},
		{[]string{"machine", "show"}, "wrong number of arguments"},
		{[]string{"machine", "show", "a", "b"}, "wrong number of arguments"},
		{[]string{"machine", "ls", "--state", "sleeping"}, `"sleeping" is not one of pxe-booting, registering, ready`},
		{[]string{"machine", "ls", "--allocated", "maybe"}, "want true or false"},
		{[]string{"machine", "ls", "--nope"}, "flag provided but not defined"},
		{[]string{"machine", "allocate", "--image", "x"}, "give a machine ID, or --size"},
		{[]string{"machine", "allocate", "m1", "--size", "s", "--image", "x"}, "not both"},
		{[]string{"machine", "allocate", "m1"}, "--image is required"},
		{[]string{"machine", "free", "m1", "--erase", "shred"}, `"shred" is not one of none, quick, secure, full`},
		{[]string{"machine", "label", "m1", "novalue"}, "want key=value"},
		{[]string{"machine", "events", "--limit", "-1"}, "must not be negative"},
		{[]string{"machine", "power", "m1"}, "wrong number of arguments"},
		{[]string{"machine", "power", "m1", "cycle"}, `"cycle" is not one of on, off, reset, status`},
		{[]string{"machine", "power", "m1", "on", "--next-boot", "usb"}, `"usb" is not one of pxe, disk`},
		{[]string{"machine", "bmc", "m1"}, "give the BMC address"},
		{[]string{"machine", "bmc", "m1", "ipmi://admin:pw@192.0.2.21", "--clear"}, "not both"},
		{[]string{"image", "add", "x", "--url", "u", "--checksum", "md5:00", "--format", "raw"}, "not sha256 or sha512"},
		{[]string{"image", "add", "x", "--url", "u", "--checksum", "sha256:" + strings.Repeat("0", 64)}, "--format is required"},
		{[]string{"image", "add", "x", "--format", "raw-zip"}, `"raw-zip" is not one of raw, raw-zstd`},
		{[]string{"size", "add", "s"}, "at least one of"},
		{[]string{"size", "add", "s", "--memory", "8GiB-4GiB"}, "minimum is above maximum"},
		{[]string{"size", "add", "s", "--memory", "4GiB:DDR5*"}, "memory takes no model glob"},
		{[]string{"size", "add", "s", "--cores", "four"}, "not a whole number"},
		{[]string{"size", "add", "s", "--storage", "1XB"}, "unknown unit"},
		{[]string{"size", "add", "s", "--gpu", "1:[A100"}, "syntax error in pattern"},
		{[]string{"-o", "xml", "machine", "ls"}, `output format "xml"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			before := len(h.machines.rec.all())
			r := h.run(tc.args...)
			if r.code != ExitUsage {
				t.Errorf("exit %d, want %d", r.code, ExitUsage)
			}
			mustContain(t, "stderr", r.stderr, "anvilctl: ", tc.want, "Usage: anvilctl")
			if n := len(h.machines.rec.all()); n != before {
				t.Errorf("%d requests sent for a bad command line", n-before)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Usage: anvilctl [global flags]"},
		{[]string{"help"}, "Commands:"},
		{[]string{"help", "size"}, "Usage: anvilctl size <subcommand>"},
		{[]string{"machine", "--help"}, "allocate (ID | --size ID"},
		{[]string{"machine", "allocate", "-h"}, "--ssh-key-file file"},
		{[]string{"machine", "--help"}, "power ID on|off|reset|status"},
		{[]string{"machine", "power", "-h"}, "--next-boot device"},
	} {
		r := h.runEnv(context.Background(), nil, tc.args...)
		if r.code != ExitOK || r.stderr != "" {
			t.Errorf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
		mustContain(t, "help output", r.stdout, tc.want)
	}
}

func TestGRPCErrors(t *testing.T) {
	h := newHarness(t)
	r := h.run("machine", "show", "m-nope")
	if r.code != ExitError || r.stdout != "" {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}
	if want := "anvilctl: NotFound: machine \"m-nope\" not found\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}

	r = h.runEnv(context.Background(), nil, "--controller", h.addr, "--ca", h.caFile, "--token", "anv_wrong", "size", "ls")
	if r.code != ExitError || r.stderr != "anvilctl: Unauthenticated: bad operator token\n" {
		t.Errorf("wrong token: exit %d, stderr %q", r.code, r.stderr)
	}

	r = h.run("machine", "power", "m-failed", "on")
	if want := "anvilctl: FailedPrecondition: power m-failed: the machine has no BMC\n"; r.code != ExitError || r.stderr != want {
		t.Errorf("power without BMC: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	r = h.run("machine", "bmc", "m-ready", "qmp:///run/anvil/vm1.qmp")
	if r.code != ExitError || !strings.Contains(r.stderr, "InvalidArgument: ") || !strings.Contains(r.stderr, "unsupported BMC type") {
		t.Errorf("qmp BMC: exit %d, stderr %q", r.code, r.stderr)
	}

	r = h.run("image", "show", "nope", "-o", "json")
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "anvilctl: NotFound: ") {
		t.Errorf("image show: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConnectionConfig(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, testToken+"\n")
	ok := func(t *testing.T, r result) {
		t.Helper()
		if r.code != ExitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	}
	ctx := context.Background()

	t.Run("flags", func(t *testing.T) {
		ok(t, h.run("size", "ls"))
	})
	t.Run("environment with fingerprint", func(t *testing.T) {
		ok(t, h.runEnv(ctx, map[string]string{
			EnvController: h.addr, EnvTokenFile: tokenFile, EnvCAFingerprint: h.ca.Fingerprint(),
		}, "size", "ls"))
	})
	t.Run("flag beats environment", func(t *testing.T) {
		ok(t, h.runEnv(ctx, map[string]string{
			EnvController: "127.0.0.1:1", EnvToken: "anv_wrong", EnvCA: h.caFile,
		}, "size", "ls", "--controller", h.addr, "--token-file", tokenFile))
	})
	t.Run("localhost name", func(t *testing.T) {
		_, port, _ := strings.Cut(h.addr, ":")
		ok(t, h.runEnv(ctx, nil, "--controller", "localhost:"+port, "--ca-fingerprint", h.ca.Fingerprint(), "--token", testToken, "size", "ls"))
	})
	for _, a := range h.authSeen() {
		if a != "Bearer "+testToken {
			t.Errorf("server saw authorization %q", a)
		}
	}
	if len(h.authSeen()) != 4 {
		t.Errorf("server saw %d calls, want 4", len(h.authSeen()))
	}

	t.Run("no token", func(t *testing.T) {
		r := h.runEnv(ctx, nil, "--controller", h.addr, "--ca", h.caFile, "size", "ls")
		if r.code != ExitUsage || !strings.Contains(r.stderr, "no operator token") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("no trust", func(t *testing.T) {
		r := h.runEnv(ctx, nil, "--controller", h.addr, "--token", testToken, "size", "ls")
		if r.code != ExitUsage || !strings.Contains(r.stderr, "no trust") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("wrong fingerprint", func(t *testing.T) {
		r := h.runEnv(ctx, nil, "--controller", h.addr, "--ca-fingerprint", "sha256:"+strings.Repeat("00", 32), "--token", testToken, "size", "ls")
		if r.code != ExitError || !strings.Contains(r.stderr, "Unavailable") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	if len(h.authSeen()) != 4 {
		t.Errorf("the token reached the server without a trusted connection (%d calls)", len(h.authSeen()))
	}
}

// TestWatchResumes breaks the stream twice (an error, then a clean end) and
// replays an already printed event: every event must be printed once, in
// order, and every reconnect must ask for the events after the last one.
func TestWatchResumes(t *testing.T) {
	h := newHarness(t)
	ev := func(seq int64) *anvilv1.Event {
		return &anvilv1.Event{Seq: seq, MachineId: "m-installing", Time: ago(time.Duration(100-seq) * time.Second),
			Type: anvilv1.EventType_EVENT_TYPE_INSTALLING, Message: "step " + strconv.FormatInt(seq, 10)}
	}
	h.machines.events = []*anvilv1.Event{ev(1), ev(2)}
	h.machines.watch = func(call int, req *anvilv1.WatchEventsRequest, stream anvilv1.MachineService_WatchEventsServer) error {
		var send []int64
		switch call {
		case 1:
			send = []int64{3, 4}
		case 2:
			send = []int64{4, 5} // 4 again: a replay the client must drop
		default:
			send = []int64{3, 6} // 3: replayed although older than after_seq
		}
		for _, s := range send {
			if err := stream.Send(ev(s)); err != nil {
				return err
			}
		}
		switch call {
		case 1:
			return status.Error(codes.Unavailable, "controller restarting")
		case 2:
			return nil // the server ends the stream
		}
		<-stream.Context().Done()
		return nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- Run(ctx, []string{"--controller", h.addr, "--ca", h.caFile, "--token", testToken, "machine", "events", "m-installing", "--watch"},
			nil, &stdout, &stderr, WithClock(testNow), WithWatchBackoff(time.Millisecond, 5*time.Millisecond))
	}()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(stdout.String(), "step 6") {
		select {
		case <-deadline:
			t.Fatalf("event 6 never printed; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		case code := <-done:
			t.Fatalf("watch ended with %d; stdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("exit %d after interrupt, want 0; stderr:\n%s", code, stderr.String())
	}

	var seqs []string
	for i, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if i == 0 {
			if !strings.HasPrefix(line, "SEQ") {
				t.Errorf("first line %q is not the header", line)
			}
			continue
		}
		seqs = append(seqs, strings.Fields(line)[0])
	}
	if want := []string{"1", "2", "3", "4", "5", "6"}; !slices.Equal(seqs, want) {
		t.Errorf("printed seqs %v, want %v:\n%s", seqs, want, stdout.String())
	}
	var after []int64
	for _, req := range h.machines.rec.all() {
		if w, ok := req.(*anvilv1.WatchEventsRequest); ok {
			if w.GetMachineId() != "m-installing" {
				t.Errorf("watch for machine %q", w.GetMachineId())
			}
			after = append(after, w.GetAfterSeq())
		}
	}
	if want := []int64{2, 4, 5}; !slices.Equal(after, want) {
		t.Errorf("watch after_seq %v, want %v", after, want)
	}
	mustContain(t, "stderr", stderr.String(), "reconnecting", "Unavailable: controller restarting")
}

func TestWatchStopsOnPermanentError(t *testing.T) {
	h := newHarness(t)
	h.machines.watch = func(int, *anvilv1.WatchEventsRequest, anvilv1.MachineService_WatchEventsServer) error {
		return status.Error(codes.PermissionDenied, "not for you")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := h.runEnv(ctx, nil, "--controller", h.addr, "--ca", h.caFile, "--token", testToken, "machine", "events", "--watch", "-o", "json")
	if r.code != ExitError || !strings.HasSuffix(r.stderr, "anvilctl: PermissionDenied: not for you\n") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	// JSON watch output is one event per line.
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(fixtureEvents()) || !strings.HasPrefix(lines[0], `{"seq":"10"`) {
		t.Errorf("JSON lines:\n%s", r.stdout)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
