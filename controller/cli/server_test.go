package cli

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// testNow is the fixed clock of every test.
func testNow() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }

const testToken = "anv_test-token"

// harness is a real gRPC server with TLS and token checking on loopback,
// serving the fake services, and a way to run anvilctl against it.
type harness struct {
	t      *testing.T
	addr   string
	caFile string
	ca     *pki.CA

	machines *fakeMachines
	images   *fakeImages
	sizes    *fakeSizes

	mu   sync.Mutex
	auth []string // authorization metadata of every call
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	ca, tlsCfg, err := pki.EnsureServerTLS(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:        t,
		caFile:   filepath.Join(dir, pki.CACertFile),
		ca:       ca,
		machines: &fakeMachines{rec: &recorder{}},
		images:   &fakeImages{},
		sizes:    &fakeSizes{},
	}
	h.images.rec, h.sizes.rec = h.machines.rec, h.machines.rec
	h.machines.machines, h.machines.events = fixtureMachines(), fixtureEvents()
	h.images.images = fixtureImages()
	h.sizes.sizes = fixtureSizes()

	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := h.checkAuth(ctx); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := h.checkAuth(ss.Context()); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	)
	anvilv1.RegisterMachineServiceServer(srv, h.machines)
	anvilv1.RegisterImageServiceServer(srv, h.images)
	anvilv1.RegisterSizeServiceServer(srv, h.sizes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return h
}

func (h *harness) checkAuth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := strings.Join(md.Get("authorization"), ",")
	h.mu.Lock()
	h.auth = append(h.auth, got)
	h.mu.Unlock()
	if got != "Bearer "+testToken {
		return status.Error(codes.Unauthenticated, "bad operator token")
	}
	return nil
}

func (h *harness) authSeen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.auth)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs anvilctl against the harness with the connection flags set.
func (h *harness) run(args ...string) result {
	h.t.Helper()
	return h.runEnv(context.Background(), nil, append([]string{"--controller", h.addr, "--ca", h.caFile, "--token", testToken}, args...)...)
}

// runEnv runs anvilctl with exactly args and the environment env.
func (h *harness) runEnv(ctx context.Context, env map[string]string, args ...string) result {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr, WithClock(testNow))
	return result{stdout.String(), stderr.String(), code}
}

// recorder keeps every request the fake services receive.
type recorder struct {
	mu   sync.Mutex
	reqs []proto.Message
}

func (r *recorder) add(m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, proto.Clone(m))
}

func (r *recorder) all() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *recorder) last() proto.Message {
	all := r.all()
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

type fakeMachines struct {
	anvilv1.UnimplementedMachineServiceServer
	rec      *recorder
	machines []*anvilv1.Machine
	events   []*anvilv1.Event
	// watch serves WatchEvents; calls counts the calls so far.
	watch func(call int, req *anvilv1.WatchEventsRequest, stream anvilv1.MachineService_WatchEventsServer) error
	mu    sync.Mutex
	calls int
}

func (f *fakeMachines) find(id string) (*anvilv1.Machine, error) {
	for _, m := range f.machines {
		if m.GetId() == id {
			return proto.CloneOf(m), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "machine %q not found", id)
}

func (f *fakeMachines) ListMachines(_ context.Context, req *anvilv1.ListMachinesRequest) (*anvilv1.ListMachinesResponse, error) {
	f.rec.add(req)
	return &anvilv1.ListMachinesResponse{Machines: f.machines}, nil
}

func (f *fakeMachines) GetMachine(_ context.Context, req *anvilv1.GetMachineRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	return f.find(req.GetId())
}

func (f *fakeMachines) AllocateMachine(_ context.Context, req *anvilv1.AllocateMachineRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	return f.find("m-installing")
}

func (f *fakeMachines) FreeMachine(_ context.Context, req *anvilv1.FreeMachineRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	return f.find(req.GetId())
}

func (f *fakeMachines) ReinstallMachine(_ context.Context, req *anvilv1.ReinstallMachineRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	return f.find(req.GetId())
}

func (f *fakeMachines) DeleteMachine(_ context.Context, req *anvilv1.DeleteMachineRequest) (*anvilv1.DeleteMachineResponse, error) {
	f.rec.add(req)
	if _, err := f.find(req.GetId()); err != nil {
		return nil, err
	}
	return &anvilv1.DeleteMachineResponse{}, nil
}

func (f *fakeMachines) SetMachineLabels(_ context.Context, req *anvilv1.SetMachineLabelsRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	m, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	m.Labels = req.GetLabels()
	return m, nil
}

// ListEvents answers newest first when a limit is set, as the API says.
func (f *fakeMachines) ListEvents(_ context.Context, req *anvilv1.ListEventsRequest) (*anvilv1.ListEventsResponse, error) {
	f.rec.add(req)
	var evs []*anvilv1.Event
	for _, ev := range f.events {
		if req.GetMachineId() == "" || ev.GetMachineId() == req.GetMachineId() {
			evs = append(evs, ev)
		}
	}
	if n := int(req.GetLimit()); n > 0 {
		slices.Reverse(evs)
		evs = evs[:min(n, len(evs))]
	}
	return &anvilv1.ListEventsResponse{Events: evs}, nil
}

// SetMachineBMC refuses what the real server refuses (bmc.ParseAddress),
// and keeps the address otherwise, shown without its password as the real
// server shows it.
func (f *fakeMachines) SetMachineBMC(_ context.Context, req *anvilv1.SetMachineBMCRequest) (*anvilv1.Machine, error) {
	f.rec.add(req)
	m, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	m.BmcAddress = ""
	if a := req.GetAddress(); a != "" {
		parsed, err := bmc.ParseAddress(a)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "set BMC of %s: %v", m.GetId(), err)
		}
		m.BmcAddress = parsed.String()
	}
	return m, nil
}

// PowerMachine answers for m-ready (which has a BMC in this fake); the
// other machines have none.
func (f *fakeMachines) PowerMachine(_ context.Context, req *anvilv1.PowerMachineRequest) (*anvilv1.PowerMachineResponse, error) {
	f.rec.add(req)
	m, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	if m.GetId() != "m-ready" {
		return nil, status.Errorf(codes.FailedPrecondition, "power %s: the machine has no BMC", m.GetId())
	}
	resp := &anvilv1.PowerMachineResponse{MachineId: m.GetId(), State: anvilv1.PowerState_POWER_STATE_ON,
		NextBoot: anvilv1.BootDevice_BOOT_DEVICE_PXE, Detail: "chassis power on"}
	if n := req.GetNextBoot(); n != anvilv1.BootDevice_BOOT_DEVICE_UNSPECIFIED {
		resp.NextBoot = n
	}
	if req.GetAction() == anvilv1.PowerAction_POWER_ACTION_OFF {
		resp.State, resp.Detail = anvilv1.PowerState_POWER_STATE_OFF, "chassis power off"
	}
	if req.GetAction() != anvilv1.PowerAction_POWER_ACTION_STATUS {
		what := "power " + strings.ToLower(strings.TrimPrefix(req.GetAction().String(), "POWER_ACTION_"))
		if n := req.GetNextBoot(); n != anvilv1.BootDevice_BOOT_DEVICE_UNSPECIFIED {
			what += " (next boot " + strings.ToLower(strings.TrimPrefix(n.String(), "BOOT_DEVICE_")) + ")"
		}
		resp.Event = &anvilv1.Event{Seq: 21, MachineId: m.GetId(), Time: ago(0), Type: anvilv1.EventType_EVENT_TYPE_POWER,
			Actor: "operator 0a1b2c3d from 192.0.2.7", Message: what + " by operator through ipmi://admin:xxxxx@192.0.2.21: now " + strings.ToLower(strings.TrimPrefix(resp.GetState().String(), "POWER_STATE_"))}
	}
	return resp, nil
}

func (f *fakeMachines) WatchEvents(req *anvilv1.WatchEventsRequest, stream anvilv1.MachineService_WatchEventsServer) error {
	f.rec.add(req)
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.mu.Unlock()
	if f.watch == nil {
		return status.Error(codes.Unimplemented, "no watch in this test")
	}
	return f.watch(call, req, stream)
}

type fakeImages struct {
	anvilv1.UnimplementedImageServiceServer
	rec    *recorder
	images []*anvilv1.Image
}

func (f *fakeImages) CreateImage(_ context.Context, req *anvilv1.CreateImageRequest) (*anvilv1.Image, error) {
	f.rec.add(req)
	img := proto.CloneOf(req.GetImage())
	img.CreatedAt = timestamppb.New(testNow())
	return img, nil
}

func (f *fakeImages) ListImages(_ context.Context, req *anvilv1.ListImagesRequest) (*anvilv1.ListImagesResponse, error) {
	f.rec.add(req)
	return &anvilv1.ListImagesResponse{Images: f.images}, nil
}

func (f *fakeImages) GetImage(_ context.Context, req *anvilv1.GetImageRequest) (*anvilv1.Image, error) {
	f.rec.add(req)
	for _, img := range f.images {
		if img.GetId() == req.GetId() {
			return img, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "image %q not found", req.GetId())
}

func (f *fakeImages) DeleteImage(_ context.Context, req *anvilv1.DeleteImageRequest) (*anvilv1.DeleteImageResponse, error) {
	f.rec.add(req)
	return &anvilv1.DeleteImageResponse{}, nil
}

type fakeSizes struct {
	anvilv1.UnimplementedSizeServiceServer
	rec   *recorder
	sizes []*anvilv1.Size
}

func (f *fakeSizes) CreateSize(_ context.Context, req *anvilv1.CreateSizeRequest) (*anvilv1.Size, error) {
	f.rec.add(req)
	return req.GetSize(), nil
}

func (f *fakeSizes) ListSizes(_ context.Context, req *anvilv1.ListSizesRequest) (*anvilv1.ListSizesResponse, error) {
	f.rec.add(req)
	return &anvilv1.ListSizesResponse{Sizes: f.sizes}, nil
}

func (f *fakeSizes) GetSize(_ context.Context, req *anvilv1.GetSizeRequest) (*anvilv1.Size, error) {
	f.rec.add(req)
	for _, s := range f.sizes {
		if s.GetId() == req.GetId() {
			return s, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "size %q not found", req.GetId())
}

func (f *fakeSizes) DeleteSize(_ context.Context, req *anvilv1.DeleteSizeRequest) (*anvilv1.DeleteSizeResponse, error) {
	f.rec.add(req)
	return &anvilv1.DeleteSizeResponse{}, nil
}

func ago(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(testNow().Add(-d)) }

func fixtureMachines() []*anvilv1.Machine {
	installingEvent := &anvilv1.Event{
		Seq: 14, MachineId: "m-installing", Time: ago(12 * time.Second), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
		Message: "writing debian-12 to /dev/nvme0n1", InstructionId: "i-7",
		Progress: &anvilv1.Progress{BytesDone: 1288490189, BytesTotal: 2 << 30, RateBytesPerSecond: 68 << 20},
	}
	return []*anvilv1.Machine{
		{
			Id: "m-installing", Uuid: "4c4c4544-0042-3510-8052-b4c04f4e3332",
			Macs:  []string{"52:54:00:12:34:56", "52:54:00:12:34:57"},
			State: anvilv1.MachineState_MACHINE_STATE_INSTALLING, Liveliness: anvilv1.Liveliness_LIVELINESS_ALIVE,
			SizeId: "small",
			Allocation: &anvilv1.Allocation{
				ImageId: "debian-12", Hostname: "web-1",
				SshPublicKeys:      []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example.com"},
				UserData:           "#cloud-config\nhostname: web-1\n",
				ExtraKernelCmdline: "console=ttyS0,115200",
				AllocatedAt:        ago(5 * time.Minute),
			},
			Inventory: &anvilv1.Inventory{
				Cpu:    &anvilv1.CPU{Vendor: "AMD", Model: "AMD EPYC 7543 32-Core Processor", Sockets: 1, Cores: 32, Threads: 64},
				Memory: &anvilv1.Memory{TotalBytes: 128 << 30, UsableBytes: 126 << 30},
				Disks: []*anvilv1.Disk{
					{Name: "nvme0n1", Path: "/dev/nvme0n1", Model: "SAMSUNG MZQL2960HCJR-00A07", Serial: "S64FNE0R801234", SizeBytes: 960197124096, Controller: "nvme"},
					{Name: "sda", Path: "/dev/sda", Vendor: "ATA", Model: "ST4000NM000A", Serial: "WS21ABCD", SizeBytes: 4000787030016, Rotational: true, Controller: "ata"},
				},
				Nics: []*anvilv1.NIC{
					{Name: "eno1", Mac: "52:54:00:12:34:56", Driver: "ice", SpeedMbps: 25000, LinkUp: true, PciAddress: "0000:41:00.0",
						LldpNeighbors: []*anvilv1.LLDPNeighbor{
							{ChassisId: "00:1c:73:aa:bb:cc", ChassisIdSubtype: "mac", PortId: "Ethernet12", PortIdSubtype: "interface-name",
								PortDescription: "to r6525-07 eno1", SystemName: "leaf-r1", SystemDescription: "Arista Networks EOS 4.30.1F",
								Vlan: 100, ManagementAddresses: []string{"10.0.0.11"}, TtlSeconds: 120},
							// An unmanaged switch: IDs only.
							{ChassisId: "00:1c:73:dd:ee:ff", ChassisIdSubtype: "mac", PortId: "00:1c:73:dd:ee:01", PortIdSubtype: "mac", TtlSeconds: 120},
						}},
					{Name: "eno2", Mac: "52:54:00:12:34:57", Driver: "ice", PciAddress: "0000:41:00.1"},
				},
				Bios:    &anvilv1.BIOS{Vendor: "Dell Inc.", Version: "2.13.3", Date: "12/01/2023"},
				Product: &anvilv1.Product{Vendor: "Dell Inc.", Name: "PowerEdge R6525", Serial: "ABC1234"},
				Bmc: &anvilv1.BMC{Channel: 1, Ip: "10.0.9.17", IpSource: "dhcp", Mac: "d0:8e:79:01:02:03", Vlan: 42,
					Firmware: "7.10", IpmiVersion: "2.0", ManufacturerId: 674},
			},
			BmcAddress: "ipmi://anvil:xxxxx@10.0.9.17", BmcSource: "in-band",
			Labels:    map[string]string{"rack": "r1", "role": "worker"},
			CreatedAt: ago(3 * 24 * time.Hour), LastSeen: ago(3 * time.Second),
			LastEvent: installingEvent,
			Progress:  installingEvent.Progress,
		},
		{
			Id: "m-ready", Uuid: "a1b2c3d4-0000-1111-2222-333344445555", Macs: []string{"52:54:00:aa:bb:01"},
			State: anvilv1.MachineState_MACHINE_STATE_READY, Liveliness: anvilv1.Liveliness_LIVELINESS_ALIVE,
			SizeId:    "unknown",
			CreatedAt: ago(26 * time.Hour), LastSeen: ago(10 * time.Second),
			LastEvent: &anvilv1.Event{Seq: 9, MachineId: "m-ready", Time: ago(2 * time.Hour), Type: anvilv1.EventType_EVENT_TYPE_WAITING},
		},
		{
			Id: "m-failed", Uuid: "ffffffff-0000-1111-2222-333344445555",
			State: anvilv1.MachineState_MACHINE_STATE_FAILED, Liveliness: anvilv1.Liveliness_LIVELINESS_DEAD,
			FailureReason: "erase /dev/sda: BLKSECDISCARD: input/output error after 3 attempts on every path",
			CrashLoop:     true, SizeId: "small",
			CreatedAt: ago(40 * 24 * time.Hour), LastSeen: ago(90 * time.Minute),
			LastEvent: &anvilv1.Event{Seq: 8, MachineId: "m-failed", Time: ago(90 * time.Minute), Type: anvilv1.EventType_EVENT_TYPE_FAILED,
				Message: "erase /dev/sda: BLKSECDISCARD: input/output error"},
		},
	}
}

func fixtureEvents() []*anvilv1.Event {
	ev := func(seq int64, d time.Duration, typ anvilv1.EventType, msg string) *anvilv1.Event {
		return &anvilv1.Event{Seq: seq, MachineId: "m-installing", Time: ago(d), Type: typ, Message: msg}
	}
	installing := ev(14, 12*time.Second, anvilv1.EventType_EVENT_TYPE_INSTALLING, "writing debian-12 to /dev/nvme0n1")
	installing.InstructionId = "i-7"
	installing.Progress = &anvilv1.Progress{BytesDone: 1288490189, BytesTotal: 2 << 30, RateBytesPerSecond: 68 << 20}
	allocated := ev(13, 5*time.Minute, anvilv1.EventType_EVENT_TYPE_ALLOCATED, "image debian-12, hostname web-1")
	allocated.Actor = "operator 0a1b2c3d from 192.0.2.7"
	return []*anvilv1.Event{
		ev(10, 20*time.Minute, anvilv1.EventType_EVENT_TYPE_PXE_BOOTING, "ipxe script served to 52:54:00:12:34:56"),
		ev(11, 19*time.Minute, anvilv1.EventType_EVENT_TYPE_REGISTERING, ""),
		ev(12, 18*time.Minute, anvilv1.EventType_EVENT_TYPE_WAITING, ""),
		allocated,
		installing,
	}
}

func fixtureImages() []*anvilv1.Image {
	return []*anvilv1.Image{
		{
			Id: "debian-12", Url: "http://10.0.0.1:8080/images/debian-12.raw.zst",
			Checksum: "sha256:" + strings.Repeat("ab", 32), Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD,
			Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
			Os:       "debian", Version: "12", Description: "Debian bookworm, cloud-init", CreatedAt: ago(7 * 24 * time.Hour),
		},
		{
			Id: "firewall-1", Url: "oci://registry.example/anvil/firewall:1",
			Checksum: "sha512:" + strings.Repeat("cd", 64), Format: anvilv1.ImageFormat_IMAGE_FORMAT_TAR_XZ,
			Features:  []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_FIREWALL},
			CreatedAt: ago(30 * time.Minute),
		},
	}
}

func fixtureSizes() []*anvilv1.Size {
	return []*anvilv1.Size{
		{
			Id: "small", Description: "1U AMD, 128 GiB",
			Constraints: []*anvilv1.Constraint{
				{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 16, Max: 32, ModelGlob: "AMD EPYC*"},
				{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY, Min: 128 << 30, Max: 128 << 30},
				{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE, Min: 900e9, Max: 2e12},
				{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU},
			},
		},
		{
			Id: "gpu",
			Constraints: []*anvilv1.Constraint{
				{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU, Min: 4, Max: 8, ModelGlob: "*A100*"},
			},
		},
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}
