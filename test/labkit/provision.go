package labkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Image is an image's catalogue entry as images/ writes it (tiny.json).
type Image struct {
	ID       string `json:"id"`
	File     string `json:"file"`
	Checksum string `json:"checksum"`
	Format   string `json:"format"`
	OS       string `json:"os"`
	Version  string `json:"version"`
}

// ReadImage reads a catalogue entry.
func ReadImage(path string) (Image, error) {
	var img Image
	b, err := os.ReadFile(path)
	if err != nil {
		return img, fmt.Errorf("image catalogue: %w", err)
	}
	if err := json.Unmarshal(b, &img); err != nil {
		return img, fmt.Errorf("image catalogue %s: %w", path, err)
	}
	return img, nil
}

// AddImage registers img, served by the lab's boot service from
// Config.ImageDir.
func AddImage(ctx context.Context, op *Operator, img Image) error {
	format, ok := anvilv1.ImageFormat_value["IMAGE_FORMAT_"+strings.ToUpper(strings.ReplaceAll(img.Format, "-", "_"))]
	if !ok {
		return fmt.Errorf("image format %q unknown", img.Format)
	}
	if _, err := op.Images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: &anvilv1.Image{
		Id: img.ID, Url: BootURL() + "/images/" + img.File, Checksum: img.Checksum,
		Format: anvilv1.ImageFormat(format), Os: img.OS, Version: img.Version,
		Features: []anvilv1.ImageFeature{anvilv1.ImageFeature_IMAGE_FEATURE_MACHINE},
	}}); err != nil {
		return fmt.Errorf("add image %s: %w", img.ID, err)
	}
	return nil
}

// Provision takes every VM's machine on its own way: Ready, then, with an
// image ID, allocated at once (host name prefix-N) and carried to
// Provisioned. It returns when all got there, or with every failure.
func (l *Lab) Provision(ctx context.Context, op *Operator, imageID, prefix string, timeout time.Duration) error {
	errs := make(chan error, len(l.VMs))
	for i, vm := range l.VMs {
		go func() {
			id := vm.UUID
			if err := WaitState(ctx, op, []string{id}, anvilv1.MachineState_MACHINE_STATE_READY, timeout); err != nil {
				errs <- err
				return
			}
			if imageID == "" {
				errs <- nil
				return
			}
			if _, err := op.Machines.AllocateMachine(ctx, &anvilv1.AllocateMachineRequest{MachineId: id, ImageId: imageID,
				Hostname: fmt.Sprintf("%s-%d", prefix, i+1)}); err != nil {
				errs <- fmt.Errorf("allocate %s: %w", id, err)
				return
			}
			errs <- WaitState(ctx, op, []string{id}, anvilv1.MachineState_MACHINE_STATE_PROVISIONED, timeout)
		}()
	}
	var failed []error
	for range l.VMs {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if err := errors.Join(failed...); err != nil {
		return fmt.Errorf("%w (consoles: %s/vm*/console.log)", err, l.cfg.Dir)
	}
	return nil
}

// Phases reads every VM's phases: its machine's events and its latest
// network boot's timeline.
func (l *Lab) Phases(ctx context.Context, op *Operator) ([]Phases, error) {
	var ps []Phases
	for i, vm := range l.VMs {
		evs, err := op.Machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: vm.UUID})
		if err != nil {
			return nil, err
		}
		tl, err := l.Timeline(vm)
		if err != nil {
			return nil, err
		}
		p := PhasesOf(fmt.Sprintf("lab-%d (%s)", i+1, vm.UUID[:8]), evs.GetEvents(), vm.PoweredOn, tl)
		p.Firmware = vm.Firmware.Name()
		ps = append(ps, p)
	}
	return ps, nil
}
