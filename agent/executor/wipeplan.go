package executor

import (
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// StepKind is one way to erase a disk.
type StepKind string

// Erase steps, from hardware to software.
const (
	StepQuick        StepKind = "quick"         // signatures, GPTs, first/last MiB
	StepNVMe         StepKind = "nvme"          // sanitize or format, as the controller supports
	StepATA          StepKind = "ata-security"  // ATA SECURITY ERASE UNIT (enhanced when supported)
	StepSecDiscard   StepKind = "blksecdiscard" // secure discard of every block
	StepZeroOut      StepKind = "blkzeroout"    // the kernel zeroes every block (offloaded when the device can)
	StepOverwrite    StepKind = "overwrite"     // every block written with zeroes, O_DIRECT
	verifyMarkers             = "markers"
	verifyZeroSample          = "zero-sample"
)

// Step is one planned erase attempt.
type Step struct {
	Kind StepKind
	// Hardware steps are verified with markers written before and checked
	// gone after; the others leave zeroes, verified by sampling.
	Hardware bool
	// Fallback marks a software step standing in for a hardware erase
	// (only planned when the Wipe allows it).
	Fallback bool
}

// Verify names how a step's result is checked.
func (s Step) Verify() string {
	if s.Hardware || s.Kind == StepSecDiscard {
		return verifyMarkers
	}
	if s.Kind == StepQuick {
		return "regions"
	}
	return verifyZeroSample
}

// DiskKind is the transport a disk's erase commands travel on.
type DiskKind string

// Disk kinds.
const (
	KindNVMe    DiskKind = "nvme"
	KindATA     DiskKind = "ata"
	KindGeneric DiskKind = "generic" // SCSI/SAS, virtio, loop, MMC...
)

// KindOf maps an inventory disk's controller type to its erase transport.
func KindOf(d *anvilv1.Disk) DiskKind {
	switch d.GetController() {
	case "nvme":
		return KindNVMe
	case "ata", "sata", "ide":
		return KindATA
	}
	return KindGeneric
}

// PlanWipe returns the steps to try, in order, for a disk of kind under
// mode; the first step that succeeds and verifies ends the erase. Secure
// mode tries the disk's hardware erase (and a secure discard), then, only
// when allowFallback, a full software erase. Full mode zeroes every block:
// BLKZEROOUT, else a full overwrite.
func PlanWipe(mode anvilv1.EraseMode, kind DiskKind, allowFallback bool) []Step {
	software := []Step{{Kind: StepZeroOut}, {Kind: StepOverwrite}}
	switch mode {
	case anvilv1.EraseMode_ERASE_MODE_QUICK:
		return []Step{{Kind: StepQuick}}
	case anvilv1.EraseMode_ERASE_MODE_FULL:
		return software
	case anvilv1.EraseMode_ERASE_MODE_SECURE:
		var steps []Step
		switch kind {
		case KindNVMe:
			steps = append(steps, Step{Kind: StepNVMe, Hardware: true})
		case KindATA:
			steps = append(steps, Step{Kind: StepATA, Hardware: true})
		}
		steps = append(steps, Step{Kind: StepSecDiscard, Hardware: true})
		if allowFallback {
			for _, s := range software {
				s.Fallback = true
				steps = append(steps, s)
			}
		}
		return steps
	}
	return nil
}
