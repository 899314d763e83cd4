package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
	"github.com/anvil-metal/anvil/test/harness"
)

func wantCode(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
	if msg := status.Convert(err).Message(); want != codes.OK && (msg == "" || strings.Contains(msg, "rpc error")) {
		t.Fatalf("%s: %v with an unclear message %q", what, want, msg)
	}
}

type env struct {
	dir   string
	h     *harness.Controller
	op    harness.Operator
	agent anvilv1.AgentServiceClient
}

func setup(t *testing.T) env {
	dir := t.TempDir()
	h := harness.StartController(t, dir, nil)
	return env{dir: dir, h: h, op: h.Operator(), agent: anvilv1.NewAgentServiceClient(h.Dial(""))}
}

func bearer(tok string) grpc.CallOption {
	return grpc.PerRPCCredentials(pki.Bearer(tok))
}

func (e env) register(t *testing.T, i int) (*anvilv1.RegisterResponse, string) {
	t.Helper()
	uuid := harness.UUID(t.Name(), i)
	resp, err := e.agent.Register(context.Background(), &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, i)}, bearer(e.h.Running().BootToken))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return resp, uuid
}

func image(id string) *anvilv1.Image {
	return &anvilv1.Image{Id: id, Url: "http://images.example/" + id, Format: anvilv1.ImageFormat_IMAGE_FORMAT_RAW,
		Checksum: fmt.Sprintf("sha256:%064x", 7), Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE}}
}

func TestAuthentication(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	anon := anvilv1.NewMachineServiceClient(e.h.Dial(""))
	_, err := anon.ListMachines(ctx, &anvilv1.ListMachinesRequest{})
	wantCode(t, err, codes.Unauthenticated, "operator call without token")
	_, err = anon.ListMachines(ctx, &anvilv1.ListMachinesRequest{}, bearer("anv_wrong"))
	wantCode(t, err, codes.Unauthenticated, "operator call with a wrong token")
	_, err = anon.ListMachines(ctx, &anvilv1.ListMachinesRequest{}, bearer(e.h.Running().BootToken))
	wantCode(t, err, codes.Unauthenticated, "operator call with the boot token")
	_, err = e.agent.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(harness.UUID("x", 0), 0)}, bearer("nope"))
	wantCode(t, err, codes.Unauthenticated, "register with a wrong boot token")
	_, err = e.agent.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(e.h.Running().BootToken))
	wantCode(t, err, codes.Unauthenticated, "heartbeat with the boot token instead of a machine credential")
	_, err = e.agent.Register(ctx, &anvilv1.RegisterRequest{Inventory: harness.Inventory(harness.UUID("x", 0), 0)}, bearer(e.h.Running().AdminToken))
	wantCode(t, err, codes.Unauthenticated, "register with the admin token")
	// A token in the wrong scheme.
	md := metadata.Pairs("authorization", "Basic "+e.h.Running().AdminToken)
	_, err = anon.ListMachines(metadata.NewOutgoingContext(ctx, md), &anvilv1.ListMachinesRequest{})
	wantCode(t, err, codes.Unauthenticated, "basic auth scheme")
}

func TestRegisterIsIdempotentAndRotatesCredential(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	r1, uuid := e.register(t, 0)
	if r1.GetMachineId() != uuid || r1.GetCredential() == "" || r1.GetHeartbeatInterval().AsDuration() <= 0 {
		t.Fatalf("register response %v", r1)
	}
	if _, err := e.op.Machines.SetMachineLabels(ctx, &anvilv1.SetMachineLabelsRequest{Id: uuid, Labels: map[string]string{"rack": "r1"}}); err != nil {
		t.Fatal(err)
	}
	old := e.openWait(t, r1.GetCredential())
	e.waitReady(t, uuid)
	// The shared boot token cannot take a live session: refused, recorded.
	req := &anvilv1.RegisterRequest{Inventory: harness.Inventory(uuid, 0)}
	_, err := e.agent.Register(ctx, req, bearer(e.h.Running().BootToken))
	wantCode(t, err, codes.PermissionDenied, "a second registration with the boot token while the session is live")
	if evs := events(t, e, uuid); evs[len(evs)-1].GetType() != anvilv1.EventType_EVENT_TYPE_SECURITY {
		t.Fatalf("refused registration left no security event: %v", evs[len(evs)-1])
	}
	// The session itself registers again with its credential.
	r2, err := e.agent.Register(ctx, req, bearer(r1.GetCredential()))
	if err != nil {
		t.Fatalf("register again with the credential: %v", err)
	}
	_, err = old.Recv()
	wantCode(t, err, codes.Unauthenticated, "wait stream of the superseded credential")
	if r2.GetMachineId() != r1.GetMachineId() {
		t.Fatalf("re-register gave id %s, want %s", r2.GetMachineId(), r1.GetMachineId())
	}
	list, err := e.op.Machines.ListMachines(ctx, &anvilv1.ListMachinesRequest{})
	if err != nil || len(list.GetMachines()) != 1 {
		t.Fatalf("machines after two registrations: %v, %v", list, err)
	}
	if m := list.GetMachines()[0]; m.GetLabels()["rack"] != "r1" {
		t.Errorf("re-registration lost the labels: %v", m.GetLabels())
	}
	_, err = e.agent.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(r1.GetCredential()))
	wantCode(t, err, codes.Unauthenticated, "heartbeat with the superseded credential")
	m, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: uuid})
	if err != nil || m.GetState() != anvilv1.MachineState_MACHINE_STATE_REGISTERING {
		t.Fatalf("after re-registration: %v, state %s; want registering until the new agent waits", err, m.GetState())
	}
	_, err = e.agent.Heartbeat(ctx, &anvilv1.HeartbeatRequest{}, bearer(r2.GetCredential()))
	wantCode(t, err, codes.OK, "heartbeat with the new credential")
}

func TestMalformedInventoryWritesNothing(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	boot := bearer(e.h.Running().BootToken)
	noDiskPath := harness.Inventory(harness.UUID("m", 1), 1)
	noDiskPath.Disks[0].Path = "nvme0n1"
	for name, inv := range map[string]*anvilv1.Inventory{
		"nil inventory":     nil,
		"no uuid":           {Cpu: &anvilv1.CPU{Cores: 4}},
		"upper-case uuid":   {Product: &anvilv1.Product{Uuid: "AAAAAAAA-0000-0000-0000-000000000000"}},
		"not a uuid":        {Product: &anvilv1.Product{Uuid: "'; DROP TABLE machines; --"}},
		"disk without path": noDiskPath,
	} {
		_, err := e.agent.Register(ctx, &anvilv1.RegisterRequest{Inventory: inv}, boot)
		wantCode(t, err, codes.InvalidArgument, name)
	}
	list, err := e.op.Machines.ListMachines(ctx, &anvilv1.ListMachinesRequest{})
	if err != nil || len(list.GetMachines()) != 0 {
		t.Fatalf("machines after malformed registrations: %v, %v", list.GetMachines(), err)
	}
}

func TestCatalogErrors(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if _, err := e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: image("debian-12")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: image("debian-12")})
	wantCode(t, err, codes.AlreadyExists, "duplicate image")
	bad := image("bad")
	bad.Checksum = "md5:abc"
	_, err = e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: bad})
	wantCode(t, err, codes.InvalidArgument, "md5 checksum")
	bad = image("Bad Name")
	_, err = e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: bad})
	wantCode(t, err, codes.InvalidArgument, "invalid image id")
	_, err = e.op.Images.GetImage(ctx, &anvilv1.GetImageRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound, "unknown image")

	_, err = e.op.Sizes.CreateSize(ctx, &anvilv1.CreateSizeRequest{Size: &anvilv1.Size{Id: "s", Constraints: []*anvilv1.Constraint{{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 8, Max: 4}}}})
	wantCode(t, err, codes.InvalidArgument, "size with min > max")
	big := &anvilv1.Size{Id: "big", Constraints: []*anvilv1.Constraint{{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 16, Max: 64}}}
	if _, err := e.op.Sizes.CreateSize(ctx, &anvilv1.CreateSizeRequest{Size: big}); err != nil {
		t.Fatal(err)
	}
	_, err = e.op.Sizes.CreateSize(ctx, &anvilv1.CreateSizeRequest{Size: big})
	wantCode(t, err, codes.AlreadyExists, "duplicate size")
	over := &anvilv1.Size{Id: "over", Constraints: []*anvilv1.Constraint{{Type: anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, Min: 32, Max: 128}}}
	_, err = e.op.Sizes.CreateSize(ctx, &anvilv1.CreateSizeRequest{Size: over})
	wantCode(t, err, codes.FailedPrecondition, "overlapping size")
	sizes, err := e.op.Sizes.ListSizes(ctx, &anvilv1.ListSizesRequest{})
	if err != nil || len(sizes.GetSizes()) != 1 {
		t.Fatalf("sizes after rejected creations: %v", sizes.GetSizes())
	}
	// A registered machine gets the one matching size.
	_, uuid := e.register(t, 0)
	m, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: uuid})
	if err != nil || m.GetSizeId() != "big" {
		t.Fatalf("machine size = %q (%v), want big", m.GetSizeId(), err)
	}
	// Deleting the size makes it unknown.
	if _, err := e.op.Sizes.DeleteSize(ctx, &anvilv1.DeleteSizeRequest{Id: "big"}); err != nil {
		t.Fatal(err)
	}
	m, err = e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: uuid})
	if err != nil || m.GetSizeId() != "unknown" {
		t.Fatalf("machine size after deleting its size = %q, want unknown", m.GetSizeId())
	}
}

// openWait opens the agent's Wait stream, which records it as waiting.
func (e env) openWait(t *testing.T, cred string) anvilv1.AgentService_WaitClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := e.agent.Wait(ctx, &anvilv1.WaitRequest{}, bearer(cred))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e env) waitReady(t *testing.T, id string) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		m, err := e.op.Machines.GetMachine(context.Background(), &anvilv1.GetMachineRequest{Id: id})
		if err != nil {
			return err
		}
		if m.GetState() != anvilv1.MachineState_MACHINE_STATE_READY {
			return fmt.Errorf("state %s", m.GetState())
		}
		return nil
	})
}

func TestMachineLifecycleErrors(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if _, err := e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: image("img")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound, "unknown machine")
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: "nope", ImageId: "img"})
	wantCode(t, err, codes.NotFound, "allocate unknown machine")

	r, id := e.register(t, 0)
	// Registered but not yet waiting: not Ready, cannot be allocated.
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img"})
	wantCode(t, err, codes.FailedPrecondition, "allocate a registering machine")
	stream := e.openWait(t, r.GetCredential())
	e.waitReady(t, id)

	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "nope"})
	wantCode(t, err, codes.NotFound, "allocate with an unknown image")
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img", TargetDisk: "/dev/sdz"})
	wantCode(t, err, codes.InvalidArgument, "allocate onto a disk the machine lacks")
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img", Hostname: "Not_A_Host"})
	wantCode(t, err, codes.InvalidArgument, "allocate with an invalid hostname")
	_, err = e.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id})
	wantCode(t, err, codes.FailedPrecondition, "free an unallocated machine")
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{SizeId: "nosuch", ImageId: "img"})
	wantCode(t, err, codes.ResourceExhausted, "allocate by a size no machine has")

	m, err := e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{Selector: map[string]string{}, SizeId: "unknown", ImageId: "img", Hostname: "web-1",
		SshPublicKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBb3 op@example"}})
	if err != nil {
		t.Fatalf("allocate by size: %v", err)
	}
	if m.GetState() != anvilv1.MachineState_MACHINE_STATE_ALLOCATED || m.GetAllocation().GetTargetDisk() != "/dev/nvme0n1" {
		t.Fatalf("allocated machine: state %s, disk %q", m.GetState(), m.GetAllocation().GetTargetDisk())
	}
	in, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if in.GetInstall().GetHostname() != "web-1" || in.GetInstall().GetUrl() != "http://images.example/img" {
		t.Fatalf("instruction = %v", in)
	}
	_, err = e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img"})
	wantCode(t, err, codes.FailedPrecondition, "allocate a busy machine")
	_, err = e.op.Machines.DeleteMachine(ctx, &anvilv1.DeleteMachineRequest{Id: id})
	wantCode(t, err, codes.FailedPrecondition, "delete an allocated machine")
	_, err = e.op.Images.DeleteImage(ctx, &anvilv1.DeleteImageRequest{Id: "img"})
	wantCode(t, err, codes.FailedPrecondition, "delete an image in use")

	// Reports: a FAILED report needs a reason; instructions of other
	// machines are not ours; progress must be coherent.
	cred := bearer(r.GetCredential())
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_FAILED}, cred)
	wantCode(t, err, codes.InvalidArgument, "FAILED without a reason")
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: "in-nope", Type: anvilv1.EventType_EVENT_TYPE_INSTALLING}, cred)
	wantCode(t, err, codes.NotFound, "report on an unknown instruction")
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{Type: anvilv1.EventType_EVENT_TYPE_ALLOCATED}, cred)
	wantCode(t, err, codes.InvalidArgument, "agent reporting an operator event")
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
		Progress: &anvilv1.Progress{BytesDone: 10, BytesTotal: 5}}, cred)
	wantCode(t, err, codes.InvalidArgument, "progress beyond total")

	// Ack, progress, then free: the pending install is cancelled and a
	// report on it is refused so the agent abandons it.
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING, Message: "started"}, cred)
	wantCode(t, err, codes.OK, "ack")
	// The same report again (its answer was lost: the replica died after
	// the commit) is acknowledged and recorded once.
	before, err := e.op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING, Message: "started"}, cred)
	wantCode(t, err, codes.OK, "retried report")
	after, err := e.op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.GetEvents()) != len(before.GetEvents()) {
		t.Errorf("a retried report grew the history from %d to %d events", len(before.GetEvents()), len(after.GetEvents()))
	}
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
		Progress: &anvilv1.Progress{BytesDone: 50, BytesTotal: 100, RateBytesPerSecond: 10}}, cred)
	wantCode(t, err, codes.OK, "progress")
	m, err = e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
	if err != nil || m.GetProgress().GetBytesDone() != 50 || m.GetState() != anvilv1.MachineState_MACHINE_STATE_INSTALLING {
		t.Fatalf("after progress: %v, state %s progress %v", err, m.GetState(), m.GetProgress())
	}
	evs, err := e.op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	n := len(evs.GetEvents())
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING,
		Progress: &anvilv1.Progress{BytesDone: 60, BytesTotal: 100}}, cred)
	wantCode(t, err, codes.OK, "repeated progress")
	evs, err = e.op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.GetEvents()) != n {
		t.Errorf("repeated progress grew the history from %d to %d events", n, len(evs.GetEvents()))
	}
	if m, err := e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id}); err != nil || m.GetProgress().GetBytesDone() != 60 {
		t.Errorf("repeated progress not taken: %v, progress %v", err, m.GetProgress())
	}

	m, err = e.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id, EraseMode: anvilv1.EraseMode_ERASE_MODE_NONE})
	if err != nil || m.GetState() != anvilv1.MachineState_MACHINE_STATE_RECLAIM || m.GetAllocation() != nil {
		t.Fatalf("free: %v, state %s", err, m.GetState())
	}
	wipe, err := stream.Recv()
	if err != nil || wipe.GetWipe().GetMode() != anvilv1.EraseMode_ERASE_MODE_NONE {
		t.Fatalf("after free: %v, %v; want a wipe instruction", wipe, err)
	}
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_BOOTING}, cred)
	wantCode(t, err, codes.FailedPrecondition, "report on the running install after free (withdrawn: it must not boot)")
}

func TestCancelledInstructionIsRefused(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if _, err := e.op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: image("img")}); err != nil {
		t.Fatal(err)
	}
	r, id := e.register(t, 0)
	stream := e.openWait(t, r.GetCredential())
	e.waitReady(t, id)
	if _, err := e.op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: "img"}); err != nil {
		t.Fatal(err)
	}
	in, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// Freed before the agent acknowledged the install.
	if _, err := e.op.Machines.FreeMachine(ctx, &anvilv1.FreeMachineRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_, err = e.agent.Report(ctx, &anvilv1.ReportRequest{InstructionId: in.GetId(), Type: anvilv1.EventType_EVENT_TYPE_INSTALLING}, bearer(r.GetCredential()))
	wantCode(t, err, codes.FailedPrecondition, "ack of a cancelled instruction")
	// A new stream gets only the wipe.
	s2 := e.openWait(t, r.GetCredential())
	got, err := s2.Recv()
	if err != nil || got.GetWipe() == nil {
		t.Fatalf("new stream got %v, %v; want only the wipe", got, err)
	}
}

func TestWatchEvents(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, id := e.register(t, 0)
	w, err := e.op.Machines.WatchEvents(ctx, &anvilv1.WatchEventsRequest{MachineId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv() // replayed
	if err != nil || first.GetType() != anvilv1.EventType_EVENT_TYPE_REGISTERING {
		t.Fatalf("first watched event %v, %v", first, err)
	}
	e.openWait(t, r.GetCredential())
	live, err := w.Recv()
	if err != nil || live.GetType() != anvilv1.EventType_EVENT_TYPE_WAITING || live.GetSeq() <= first.GetSeq() {
		t.Fatalf("live event %v, %v", live, err)
	}
	// Resuming after the first event replays exactly the second.
	w2, err := e.op.Machines.WatchEvents(ctx, &anvilv1.WatchEventsRequest{MachineId: id, AfterSeq: first.GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	again, err := w2.Recv()
	if err != nil || again.GetSeq() != live.GetSeq() {
		t.Fatalf("resumed watch gave %v, %v; want seq %d", again, err, live.GetSeq())
	}
}

func TestDeletedMachineMustRegisterAgain(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	r, id := e.register(t, 0)
	stream := e.openWait(t, r.GetCredential())
	e.waitReady(t, id)
	if _, err := e.op.Machines.DeleteMachine(ctx, &anvilv1.DeleteMachineRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_, err := stream.Recv()
	wantCode(t, err, codes.Unauthenticated, "wait stream of a deleted machine")
	_, err = e.op.Machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: id})
	wantCode(t, err, codes.NotFound, "deleted machine")
}
