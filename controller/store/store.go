// Package store defines the controller's persistence contract: one Store
// interface, transactional, whose implementations (SQLite and PostgreSQL,
// package sqlstore) pass the same test suite in storetest.
//
// The store holds no business rules. Which events to append, how the machine
// state follows from them and which instructions to queue is decided by the
// caller inside one transaction (Store.Tx), so a request either changes
// everything it meant to or nothing.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/anvil-metal/anvil/controller/lifecycle"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Sentinel errors; implementations wrap them with the operation and key.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
)

// Machine is one machine's record. Inventory, Allocation and Status are
// stored as they are; Status is the lifecycle fold of all events ever
// appended, so trimming old events never changes it.
type Machine struct {
	ID        string
	UUID      string // SMBIOS system UUID, unique
	MACs      []string
	Inventory *anvilv1.Inventory
	SizeID    string // "" or "unknown" when no single size matches
	Labels    map[string]string
	// Allocation is nil while the machine is not allocated.
	Allocation *anvilv1.Allocation
	Status     lifecycle.Status
	// CredentialHash is the SHA-256 of the machine's current credential.
	CredentialHash []byte
	CreatedAt      time.Time
	LastSeen       time.Time
	// Progress of the running instruction, if any (not history).
	Progress *anvilv1.Progress
	// BMC is the address of the machine's BMC (see controller/bmc), sealed
	// with the controller's BMC key: set by the operator, or enrolled
	// in-band by the agent (Trust.BMCInBand); "" when none.
	BMC string
	// Trust is what the controller keeps about the machine's agent
	// sessions (controller/server decides with it).
	Trust Trust
	// HeldInventory is the inventory of a registration that awaits an
	// operator's approval; nil when none. Inventory keeps the last trusted
	// one meanwhile.
	HeldInventory *anvilv1.Inventory
	// Light marks a machine read without its inventories
	// (Tx.GetMachineLight, MachineFilter.Light): Inventory and
	// HeldInventory are nil whatever is stored, UpdateMachine leaves the
	// stored ones as they are and refuses a Light machine that carries
	// either, and CreateMachine refuses it.
	Light bool
}

// Trust is the state of a machine's enrollment and agent sessions. Its
// times read back in UTC, the zero time as the zero time.
type Trust struct {
	// BootTokensBefore makes boot tokens single use: a boot token minted
	// at or before it is spent (set to the mint time of the token the last
	// boot registration used).
	BootTokensBefore time.Time `json:"boot_tokens_before,omitempty"`
	// ExpectBootUntil is set when the controller caused or announced a
	// network boot (free, reinstall, a power action, a reboot the agent
	// reported); a registration before then was expected. ExpectBootWhy
	// names the cause.
	// Only boot tokens minted after ExpectBootSince count.
	ExpectBootSince time.Time `json:"expect_boot_since,omitempty"`
	ExpectBootUntil time.Time `json:"expect_boot_until,omitempty"`
	ExpectBootWhy   string    `json:"expect_boot_why,omitempty"`
	// SessionAddr is the address the current agent session registered
	// from.
	SessionAddr string `json:"session_addr,omitempty"`
	// Held: the current session is not trusted; it gets no instruction
	// and its reports are refused until an operator approves it (whatever
	// the operator does to the machine meanwhile).
	Held bool `json:"held,omitempty"`
	// Generation counts allocations, reinstalls and frees; a phone-home
	// token is good for the generation it was minted in only.
	Generation int64 `json:"generation,omitempty"`
	// ATAPassword is the ATA security password erases of this machine use
	// (secret: never shown by the API).
	ATAPassword string `json:"ata_password,omitempty"`
	// BMCInBand: the machine's BMC address (Machine.BMC) is the one its
	// agent enrolled in-band, not one an operator set.
	BMCInBand bool `json:"bmc_in_band,omitempty"`
	// BMCPrevious is the machine's previous in-band BMC address (sealed)
	// while a new in-band password may not have reached the BMC: the
	// controller falls back to it when the new one is refused, and drops
	// it once either answers.
	BMCPrevious string `json:"bmc_previous,omitempty"`
}

// MachineFilter selects machines; zero fields match everything.
type MachineFilter struct {
	State  anvilv1.MachineState // Status.State
	SizeID string
	// Allocated matches Allocation != nil.
	Allocated *bool
	// Hostname matches Allocation.Hostname exactly.
	Hostname string
	// Labels match machines that have every one of these keys with its value.
	Labels map[string]string
	// WithBMC matches machines that have a BMC address.
	WithBMC bool
	// Light lists the machines without their inventories (Machine.Light):
	// for sweeps over the fleet that decide on state, power and last-seen,
	// where decoding every machine's hardware would cost more than the
	// decision.
	Light bool
}

// Instruction is an instruction queued for a machine. It is delivered on
// every Wait stream until AckedAt is set, unless it was cancelled (a free or
// reinstall cancels what the machine had queued or was running).
type Instruction struct {
	ID          string
	MachineID   string
	Instruction *anvilv1.Instruction // Instruction.Id == ID
	CreatedAt   time.Time
	AckedAt     time.Time // zero until the agent reported on it
	CancelledAt time.Time // zero until CancelPending (acked or not)
}

// Store is the whole persistence layer.
type Store interface {
	// Tx runs fn in one transaction. If fn returns an error, nothing it did
	// is kept and the error is returned as is. If fn panics, nothing is kept
	// and the panic goes on. Transactions do not nest: fn must not call Tx
	// (it may wait forever for the writer it holds itself).
	//
	// Times are kept to the nanosecond and read back in UTC; the zero time
	// reads back as the zero time.
	Tx(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction on a consistent snapshot;
	// every write inside it fails.
	View(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// Tx is the set of operations available inside a transaction.
type Tx interface {
	// Machines. GetMachine* return ErrNotFound when absent.
	GetMachine(ctx context.Context, id string) (*Machine, error)
	GetMachineByUUID(ctx context.Context, uuid string) (*Machine, error)
	// GetMachineLight is GetMachine without the inventories
	// (Machine.Light): the hot paths that decide on state and trust (an
	// agent's Wait stream) do not decode tens of kilobytes of hardware.
	GetMachineLight(ctx context.Context, id string) (*Machine, error)
	// MachineIDByCredential is the authentication lookup: the id only,
	// without decoding the machine.
	MachineIDByCredential(ctx context.Context, credentialHash []byte) (string, error)
	// ListMachines returns the machines f selects, ordered by ID.
	ListMachines(ctx context.Context, f MachineFilter) ([]*Machine, error)
	// CountMachinesByState counts the machines per Status.State without
	// reading them (metrics of a large fleet).
	CountMachinesByState(ctx context.Context) (map[anvilv1.MachineState]int, error)
	// CreateMachine inserts; ErrAlreadyExists when the id, UUID or (non-empty)
	// credential hash is taken.
	CreateMachine(ctx context.Context, m *Machine) error
	// UpdateMachine replaces every field of an existing machine (ErrNotFound
	// if absent; ErrAlreadyExists when the new UUID or credential hash is
	// another machine's); the inventories of a Light machine stay as
	// stored.
	UpdateMachine(ctx context.Context, m *Machine) error
	// DeleteMachine removes the machine, its events and its instructions;
	// ErrNotFound if absent.
	DeleteMachine(ctx context.Context, id string) error
	// TouchMachine moves LastSeen forward to at, never back (heartbeats,
	// written in batches; cheap); ErrNotFound if absent.
	TouchMachine(ctx context.Context, id string, at time.Time) error

	// Events. AppendEvent assigns e.Seq (global, strictly increasing, never
	// reused); ErrNotFound when e.MachineId names no machine.
	AppendEvent(ctx context.Context, e *anvilv1.Event) error
	// ListEvents returns the machine's events with Seq > afterSeq in
	// ascending order; machineID "" means every machine; limit 0 means all.
	ListEvents(ctx context.Context, machineID string, afterSeq int64, limit int) ([]*anvilv1.Event, error)
	// LastEvents returns the newest limit events of a machine, newest first;
	// limit 0 means all.
	LastEvents(ctx context.Context, machineID string, limit int) ([]*anvilv1.Event, error)
	// TrimEvents keeps only the newest keep events of the machine.
	TrimEvents(ctx context.Context, machineID string, keep int) error

	// Instructions. CreateInstruction returns ErrAlreadyExists for a taken
	// id and ErrNotFound when the machine does not exist.
	CreateInstruction(ctx context.Context, in *Instruction) error
	// PendingInstructions returns the machine's instructions that are
	// neither acked nor cancelled, oldest first.
	PendingInstructions(ctx context.Context, machineID string) ([]*Instruction, error)
	GetInstruction(ctx context.Context, id string) (*Instruction, error)
	// AckInstruction sets AckedAt if unset; it reports whether this call
	// acked it (false when it was acked already). ErrNotFound if absent.
	AckInstruction(ctx context.Context, id string, at time.Time) (bool, error)
	// CancelPending cancels every instruction of the machine that is not
	// cancelled yet, acked ones included: reports on a cancelled instruction
	// are refused, which tells an agent still running it to stop.
	CancelPending(ctx context.Context, machineID string, at time.Time) error

	// Images. CreateImage returns ErrAlreadyExists for a taken id; Get and
	// Delete return ErrNotFound when absent.
	CreateImage(ctx context.Context, img *anvilv1.Image) error
	GetImage(ctx context.Context, id string) (*anvilv1.Image, error)
	ListImages(ctx context.Context) ([]*anvilv1.Image, error)
	DeleteImage(ctx context.Context, id string) error

	// Announce tells the other controllers sharing this store of c, when
	// and only when this transaction commits. A store that serves one
	// controller (SQLite) does nothing: that controller's hub already
	// knows.
	Announce(ctx context.Context, c Change) error

	// Sizes. CreateSize returns ErrAlreadyExists for a taken id; Get and
	// Delete return ErrNotFound when absent.
	CreateSize(ctx context.Context, s *anvilv1.Size) error
	GetSize(ctx context.Context, id string) (*anvilv1.Size, error)
	ListSizes(ctx context.Context) ([]*anvilv1.Size, error)
	DeleteSize(ctx context.Context, id string) error
}

// Change is what a committed transaction changed that controllers holding
// streams must hear of: the machines whose pending instructions changed
// (their Wait streams look at the store again) and the events it
// published. A stored event (Seq > 0) travels as its machine and seq only:
// watchers replay it from the store; a live progress event (Seq 0, never
// stored) travels whole.
type Change struct {
	Wake   []string
	Events []*anvilv1.Event
	// Resync says changes may have been missed (the feed was cut): every
	// Wait stream and watcher must look at the store again.
	Resync bool
}
