package executor

import (
	"reflect"
	"testing"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func kinds(steps []Step) []StepKind {
	var out []StepKind
	for _, s := range steps {
		k := s.Kind
		if s.Fallback {
			k += "(fallback)"
		}
		out = append(out, k)
	}
	return out
}

func TestPlanWipe(t *testing.T) {
	secure, full, quick := anvilv1.EraseMode_ERASE_MODE_SECURE, anvilv1.EraseMode_ERASE_MODE_FULL, anvilv1.EraseMode_ERASE_MODE_QUICK
	cases := []struct {
		mode     anvilv1.EraseMode
		kind     DiskKind
		fallback bool
		want     []StepKind
	}{
		{quick, KindNVMe, true, []StepKind{StepQuick}},
		{full, KindATA, false, []StepKind{StepZeroOut, StepOverwrite}},
		{secure, KindNVMe, false, []StepKind{StepNVMe, StepSecDiscard}},
		{secure, KindATA, false, []StepKind{StepATA, StepSecDiscard}},
		{secure, KindGeneric, false, []StepKind{StepSecDiscard}},
		{secure, KindATA, true, []StepKind{StepATA, StepSecDiscard, StepZeroOut + "(fallback)", StepOverwrite + "(fallback)"}},
		{anvilv1.EraseMode_ERASE_MODE_NONE, KindNVMe, true, nil},
	}
	for _, c := range cases {
		if got := kinds(PlanWipe(c.mode, c.kind, c.fallback)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s fallback=%v: %v, want %v", c.mode, c.kind, c.fallback, got, c.want)
		}
	}
	for _, s := range PlanWipe(secure, KindNVMe, true) {
		if want := map[bool]string{true: verifyMarkers, false: verifyZeroSample}[s.Hardware]; s.Verify() != want {
			t.Errorf("step %s verified by %s, want %s", s.Kind, s.Verify(), want)
		}
	}
}

func TestKindOf(t *testing.T) {
	for ctrl, want := range map[string]DiskKind{"nvme": KindNVMe, "sata": KindATA, "ata": KindATA, "scsi": KindGeneric, "virtio": KindGeneric, "": KindGeneric} {
		if got := KindOf(&anvilv1.Disk{Controller: ctrl}); got != want {
			t.Errorf("%q: %s, want %s", ctrl, got, want)
		}
	}
}
