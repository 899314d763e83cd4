package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Queries, in "?" form. Those in preparedQueries are prepared at Open.
const (
	// The columns scanMachine reads. The inventories live in their own
	// table (migration 0007), joined when a machine is read whole; a Light
	// machine's read as absent (the same columns, no join, nothing
	// decoded).
	machineColsHead  = "machines.id, uuid, macs, "
	machineColsMid   = ", size_id, labels, allocation, allocated, status, credential_hash, created_at, last_seen, progress, progress IS NOT NULL, bmc, trust, "
	machineColsNone  = "NULL, NULL IS NOT NULL"
	machineCols      = machineColsHead + "inventory, inventory IS NOT NULL" + machineColsMid + "held_inventory, held_inventory IS NOT NULL"
	machineColsLight = machineColsHead + machineColsNone + machineColsMid + machineColsNone
	machinesWhole    = "machines LEFT JOIN machine_inventories ON machine_inventories.machine_id = machines.id"

	qGetMachine             = "SELECT " + machineCols + " FROM " + machinesWhole + " WHERE machines.id = ?"
	qGetMachineLight        = "SELECT " + machineColsLight + " FROM machines WHERE id = ?"
	qGetMachineByUUID       = "SELECT " + machineCols + " FROM " + machinesWhole + " WHERE uuid = ?"
	qGetMachineByCredential = "SELECT id FROM machines WHERE credential_hash = ?"
	qListMachines           = "SELECT " + machineCols + " FROM " + machinesWhole
	qListMachinesLight      = "SELECT " + machineColsLight + " FROM machines"
	qInsertMachine          = "INSERT INTO machines (id, uuid, macs, size_id, labels, allocation, allocated, hostname, " +
		"status, state, credential_hash, created_at, last_seen, progress, bmc, trust) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	qUpdateMachine = "UPDATE machines SET uuid = ?, macs = ?, size_id = ?, labels = ?, allocation = ?, allocated = ?, " +
		"hostname = ?, status = ?, state = ?, credential_hash = ?, created_at = ?, last_seen = ?, progress = ?, bmc = ?, trust = ? " +
		"WHERE id = ?"
	qPutInventories = "INSERT INTO machine_inventories (machine_id, inventory, held_inventory) VALUES (?, ?, ?) " +
		"ON CONFLICT (machine_id) DO UPDATE SET inventory = excluded.inventory, held_inventory = excluded.held_inventory"
	qDeleteInventories = "DELETE FROM machine_inventories WHERE machine_id = ?"
	qDeleteMachine     = "DELETE FROM machines WHERE id = ?"
	qTouchMachine      = "UPDATE machines SET last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END WHERE id = ?"

	eventCols    = "seq, machine_id, time, type, message, actor, instruction_id, progress, progress IS NOT NULL"
	qInsertEvent = "INSERT INTO events (machine_id, time, type, message, actor, instruction_id, progress) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq"
	qListEvents             = "SELECT " + eventCols + " FROM events WHERE seq > ? ORDER BY seq"
	qListEventsLimit        = qListEvents + " LIMIT ?"
	qListMachineEvents      = "SELECT " + eventCols + " FROM events WHERE machine_id = ? AND seq > ? ORDER BY seq"
	qListMachineEventsLimit = qListMachineEvents + " LIMIT ?"
	qLastEvents             = "SELECT " + eventCols + " FROM events WHERE machine_id = ? ORDER BY seq DESC"
	qLastEventsLimit        = qLastEvents + " LIMIT ?"
	// qTrimBound finds the newest event beyond the keep newest: walking at
	// most keep+1 entries of events_machine_seq, and finding none when
	// there is nothing to trim.
	qTrimBound  = "SELECT seq FROM events WHERE machine_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?"
	qTrimEvents = "DELETE FROM events WHERE machine_id = ? AND seq <= ?"

	instructionCols    = "id, machine_id, payload, created_at, acked_at, cancelled_at"
	qInsertInstruction = "INSERT INTO instructions (id, machine_id, payload, created_at, acked_at, cancelled_at) VALUES (?, ?, ?, ?, ?, ?)"
	qGetInstruction    = "SELECT " + instructionCols + " FROM instructions WHERE id = ?"
	// Served by the partial index instructions_pending. NULLS FIRST makes
	// a zero CreatedAt sort first in PostgreSQL as it does in SQLite.
	qPendingInstructions = "SELECT " + instructionCols + " FROM instructions " +
		"WHERE machine_id = ? AND acked_at IS NULL AND cancelled_at IS NULL ORDER BY created_at NULLS FIRST, id"
	qAckInstruction    = "UPDATE instructions SET acked_at = ? WHERE id = ? AND acked_at IS NULL"
	qInstructionExists = "SELECT COUNT(*) FROM instructions WHERE id = ?"
	// qCancelPending cancels acked instructions too (see store.Tx).
	qCancelPending = "UPDATE instructions SET cancelled_at = ? WHERE machine_id = ? AND cancelled_at IS NULL"

	qInsertImage = "INSERT INTO images (id, payload, url, format, os, version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
	qGetImage    = "SELECT payload FROM images WHERE id = ?"
	qListImages  = "SELECT payload FROM images ORDER BY id"
	qDeleteImage = "DELETE FROM images WHERE id = ?"

	qInsertSize = "INSERT INTO sizes (id, payload) VALUES (?, ?)"
	qGetSize    = "SELECT payload FROM sizes WHERE id = ?"
	qListSizes  = "SELECT payload FROM sizes ORDER BY id"
	qDeleteSize = "DELETE FROM sizes WHERE id = ?"
)

// preparedQueries returns the queries prepared on every connection;
// ListMachines builds its query from the filter and is not among them.
func preparedQueries() []string {
	return []string{
		qGetMachine, qGetMachineLight, qGetMachineByUUID, qGetMachineByCredential, qInsertMachine, qUpdateMachine,
		qPutInventories, qDeleteInventories, qDeleteMachine, qTouchMachine,
		qInsertEvent, qListEvents, qListEventsLimit, qListMachineEvents, qListMachineEventsLimit, qLastEvents, qLastEventsLimit,
		qTrimBound, qTrimEvents,
		qInsertInstruction, qGetInstruction, qPendingInstructions, qAckInstruction, qInstructionExists, qCancelPending,
		qInsertImage, qGetImage, qListImages, qDeleteImage,
		qInsertSize, qGetSize, qListSizes, qDeleteSize,
	}
}

// tx implements store.Tx on one *sql.Tx. It is used by one goroutine.
type tx struct {
	d        *dialect
	tx       *sql.Tx
	prepared map[string]*sql.Stmt // shared, read-only
	inv      *invCodec            // shared
	local    map[string]*sql.Stmt // prepared, bound to tx
	// origin marks this store's change announcements, feedKey signs them
	// (feed.go).
	origin  string
	feedKey []byte
	// detach: statements run without the caller's cancellation, which
	// is checked before each one instead. Always in write transactions:
	// their batch is shared (batch.go), and a statement cut off by one
	// caller's cancel would fail the others' work (SQLite's interrupt
	// rolls the transaction back, pgx closes the connection). In reads
	// as the dialect says (dialect.detach).
	detach bool
}

var _ store.Tx = (*tx)(nil)

// stmt returns q bound to the transaction, or nil when q is not prepared.
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if st, ok := t.local[q]; ok {
		return st
	}
	p, ok := t.prepared[q]
	if !ok {
		return nil
	}
	if t.local == nil {
		t.local = make(map[string]*sql.Stmt, 8)
	}
	st := t.tx.StmtContext(ctx, p) // closed with the transaction
	t.local[q] = st
	return st
}

// sctx is the context a statement runs with (tx.detach): nil and the
// error when the caller has given up.
func (t *tx) sctx(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if t.detach {
		return context.WithoutCancel(ctx), nil
	}
	return ctx, nil
}

func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx, err := t.sctx(ctx)
	if err != nil {
		return nil, err
	}
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, t.d.rebind(q), args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx, err := t.sctx(ctx)
	if err != nil {
		return nil, err
	}
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, t.d.rebind(q), args...)
}

// queryRow has no error of its own to return: a caller that has already
// given up keeps its context, whose error the row's Scan returns.
func (t *tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if t.detach && ctx.Err() == nil {
		ctx = context.WithoutCancel(ctx)
	}
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, t.d.rebind(q), args...)
}

// execOne runs a statement that must change exactly one row; none is
// ErrNotFound.
func (t *tx) execOne(ctx context.Context, q string, args ...any) error {
	res, err := t.exec(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// collect scans every row of rows and closes it, reporting iteration and
// close errors.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) (out []T, err error) {
	defer func() {
		if cerr := rows.Close(); cerr != nil {
			out, err = nil, errors.Join(err, cerr)
		}
	}()
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// notFound turns sql.ErrNoRows into store.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// --- machines ---

func (t *tx) scanMachine(r scanner) (*store.Machine, error) {
	// The scan targets are fields of two values, not 19 variables: each
	// pointer handed to Scan escapes, and a sweep reads 10,000 machines.
	m, c := new(store.Machine), new(machineScan)
	if err := r.Scan(&m.ID, &m.UUID, &c.macs, &c.inv, &c.hasInv, &m.SizeID, &c.labels, &c.alloc, &c.allocated,
		&c.status, &c.cred, &c.created, &c.seen, &c.prog, &c.hasPrg, &m.BMC, &c.trust, &c.held, &c.hasHeld); err != nil {
		return nil, err
	}
	var err error
	if err = json.Unmarshal([]byte(c.macs), &m.MACs); err != nil {
		return nil, fmt.Errorf("decode machine %q macs: %w", m.ID, err)
	}
	if err = json.Unmarshal([]byte(c.labels), &m.Labels); err != nil {
		return nil, fmt.Errorf("decode machine %q labels: %w", m.ID, err)
	}
	if m.Inventory, err = t.inv.decode(c.inv, c.hasInv); err != nil {
		return nil, fmt.Errorf("decode machine %q inventory: %w", m.ID, err)
	}
	if m.Allocation, err = decMsg[anvilv1.Allocation](c.alloc, c.allocated); err != nil {
		return nil, fmt.Errorf("decode machine %q allocation: %w", m.ID, err)
	}
	if m.Status, err = decStatus(c.status); err != nil {
		return nil, fmt.Errorf("decode machine %q status: %w", m.ID, err)
	}
	if m.Progress, err = decMsg[anvilv1.Progress](c.prog, c.hasPrg); err != nil {
		return nil, fmt.Errorf("decode machine %q progress: %w", m.ID, err)
	}
	if m.Trust, err = decTrust(c.trust); err != nil {
		return nil, fmt.Errorf("decode machine %q trust: %w", m.ID, err)
	}
	if m.HeldInventory, err = t.inv.decode(c.held, c.hasHeld); err != nil {
		return nil, fmt.Errorf("decode machine %q held inventory: %w", m.ID, err)
	}
	m.CredentialHash = c.cred
	m.CreatedAt = decTime(c.created)
	m.LastSeen = decTime(c.seen)
	return m, nil
}

// machineScan holds the columns of a machine row that are decoded after the
// scan.
type machineScan struct {
	macs, labels, status, trust        string
	inv, alloc, cred, prog, held       []byte
	hasInv, allocated, hasPrg, hasHeld bool
	created, seen                      sql.NullInt64
}

// machineArgs are the column values of m in the order of qUpdateMachine
// (uuid ... trust), without the id.
func machineArgs(m *store.Machine) ([]any, error) {
	if m.UUID == "" {
		return nil, errors.New("empty UUID")
	}
	macs, err := encJSON(m.MACs)
	if err != nil {
		return nil, fmt.Errorf("encode macs: %w", err)
	}
	labels, err := encJSON(m.Labels)
	if err != nil {
		return nil, fmt.Errorf("encode labels: %w", err)
	}
	alloc, err := encMsg(m.Allocation)
	if err != nil {
		return nil, fmt.Errorf("encode allocation: %w", err)
	}
	var hostname any // NULL when not allocated
	if alloc != nil {
		hostname = m.Allocation.GetHostname()
	}
	status, err := encStatus(m.Status)
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	var cred any // NULL: no credential; NULLs never collide in the UNIQUE index
	if len(m.CredentialHash) > 0 {
		cred = m.CredentialHash
	}
	created, err := encTime(m.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("encode created_at: %w", err)
	}
	seen, err := encTime(m.LastSeen)
	if err != nil {
		return nil, fmt.Errorf("encode last_seen: %w", err)
	}
	prog, err := encMsg(m.Progress)
	if err != nil {
		return nil, fmt.Errorf("encode progress: %w", err)
	}
	trust, err := encTrust(m.Trust)
	if err != nil {
		return nil, fmt.Errorf("encode trust: %w", err)
	}
	return []any{m.UUID, macs, m.SizeID, labels, alloc, alloc != nil, hostname,
		status, int64(m.Status.State), cred, created, seen, prog, m.BMC, trust}, nil
}

// errLightWithInventory: a Light machine's inventories are not written;
// one that carries one would lose it without a word.
var errLightWithInventory = errors.New("a machine read without its inventories (Light) carries one: read it whole to change them")

// putInventories writes m's inventories (no row when it has neither); a
// Light machine's stay as stored.
func (t *tx) putInventories(ctx context.Context, m *store.Machine, created bool) error {
	if m.Light {
		return nil
	}
	invBuf, heldBuf := t.inv.buffer(), t.inv.buffer()
	defer t.inv.recycle(invBuf) // after the write: the driver has copied the values
	defer t.inv.recycle(heldBuf)
	inv, err := t.inv.encode(m.Inventory, invBuf)
	if err != nil {
		return fmt.Errorf("encode inventory: %w", err)
	}
	held, err := t.inv.encode(m.HeldInventory, heldBuf)
	if err != nil {
		return fmt.Errorf("encode held inventory: %w", err)
	}
	switch {
	case inv != nil || held != nil:
		_, err = t.exec(ctx, qPutInventories, m.ID, inv, held)
	case !created:
		_, err = t.exec(ctx, qDeleteInventories, m.ID)
	}
	if err != nil {
		return fmt.Errorf("write inventories: %w", err)
	}
	return nil
}

func (t *tx) GetMachine(ctx context.Context, id string) (*store.Machine, error) {
	m, err := t.scanMachine(t.queryRow(ctx, qGetMachine, id))
	if err != nil {
		return nil, fmt.Errorf("get machine %q: %w", id, notFound(err))
	}
	return m, nil
}

func (t *tx) GetMachineLight(ctx context.Context, id string) (*store.Machine, error) {
	m, err := t.scanMachine(t.queryRow(ctx, qGetMachineLight, id))
	if err != nil {
		return nil, fmt.Errorf("get machine %q: %w", id, notFound(err))
	}
	m.Light = true
	return m, nil
}

func (t *tx) GetMachineByUUID(ctx context.Context, uuid string) (*store.Machine, error) {
	m, err := t.scanMachine(t.queryRow(ctx, qGetMachineByUUID, uuid))
	if err != nil {
		return nil, fmt.Errorf("get machine by uuid %q: %w", uuid, notFound(err))
	}
	return m, nil
}

func (t *tx) MachineIDByCredential(ctx context.Context, credentialHash []byte) (string, error) {
	if len(credentialHash) == 0 {
		return "", fmt.Errorf("machine by credential: empty hash: %w", store.ErrNotFound)
	}
	var id string
	if err := t.queryRow(ctx, qGetMachineByCredential, credentialHash).Scan(&id); err != nil {
		return "", fmt.Errorf("machine by credential %x: %w", credentialHash, notFound(err))
	}
	return id, nil
}

func (t *tx) CountMachinesByState(ctx context.Context) (map[anvilv1.MachineState]int, error) {
	rows, err := t.query(ctx, "SELECT state, COUNT(*) FROM machines GROUP BY state")
	if err != nil {
		return nil, fmt.Errorf("count machines by state: %w", err)
	}
	defer rows.Close()
	out := map[anvilv1.MachineState]int{}
	for rows.Next() {
		var st int32
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count machines by state: %w", err)
		}
		out[anvilv1.MachineState(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count machines by state: %w", err)
	}
	return out, nil
}

func (t *tx) ListMachines(ctx context.Context, f store.MachineFilter) ([]*store.Machine, error) {
	var (
		where []string
		args  []any
	)
	if f.State != anvilv1.MachineState_MACHINE_STATE_UNSPECIFIED {
		where, args = append(where, "state = ?"), append(args, int64(f.State))
	}
	if f.SizeID != "" {
		where, args = append(where, "size_id = ?"), append(args, f.SizeID)
	}
	if f.Allocated != nil {
		where, args = append(where, "allocated = ?"), append(args, *f.Allocated)
	}
	if f.Hostname != "" {
		where, args = append(where, "hostname = ?"), append(args, f.Hostname)
	}
	if f.WithBMC {
		where = append(where, "bmc <> ''")
	}
	q := qListMachines
	if f.Light {
		q = qListMachinesLight
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY machines.id"
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	ms, err := collect(rows, t.scanMachine)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	for _, m := range ms {
		m.Light = f.Light
	}
	if len(f.Labels) == 0 {
		return ms, nil
	}
	out := ms[:0]
	for _, m := range ms {
		if hasLabels(m.Labels, f.Labels) {
			out = append(out, m)
		}
	}
	return out, nil
}

// hasLabels reports whether have contains every key of want with its value.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func (t *tx) CreateMachine(ctx context.Context, m *store.Machine) error {
	if m == nil {
		return errors.New("create machine: nil machine")
	}
	if m.ID == "" {
		return errors.New("create machine: empty id")
	}
	if m.Light {
		return fmt.Errorf("create machine %q: a machine read without its inventories (Light) cannot be created", m.ID)
	}
	args, err := machineArgs(m)
	if err != nil {
		return fmt.Errorf("create machine %q: %w", m.ID, err)
	}
	if _, err := t.exec(ctx, qInsertMachine, append([]any{m.ID}, args...)...); err != nil {
		return fmt.Errorf("create machine %q (uuid %q): %w", m.ID, m.UUID, t.d.classify(err, nil))
	}
	if err := t.putInventories(ctx, m, true); err != nil {
		return fmt.Errorf("create machine %q: %w", m.ID, err)
	}
	return nil
}

func (t *tx) UpdateMachine(ctx context.Context, m *store.Machine) error {
	if m == nil {
		return errors.New("update machine: nil machine")
	}
	if m.Light && (m.Inventory != nil || m.HeldInventory != nil) {
		return fmt.Errorf("update machine %q: %w", m.ID, errLightWithInventory)
	}
	args, err := machineArgs(m)
	if err != nil {
		return fmt.Errorf("update machine %q: %w", m.ID, err)
	}
	if err := t.execOne(ctx, qUpdateMachine, append(args, m.ID)...); err != nil {
		return fmt.Errorf("update machine %q: %w", m.ID, t.d.classify(err, nil))
	}
	if err := t.putInventories(ctx, m, false); err != nil {
		return fmt.Errorf("update machine %q: %w", m.ID, err)
	}
	return nil
}

func (t *tx) DeleteMachine(ctx context.Context, id string) error {
	// Events and instructions go with it: ON DELETE CASCADE.
	if err := t.execOne(ctx, qDeleteMachine, id); err != nil {
		return fmt.Errorf("delete machine %q: %w", id, err)
	}
	return nil
}

func (t *tx) TouchMachine(ctx context.Context, id string, at time.Time) error {
	seen, err := encTime(at)
	if err == nil {
		err = t.execOne(ctx, qTouchMachine, seen, seen, id)
	}
	if err != nil {
		return fmt.Errorf("touch machine %q: %w", id, err)
	}
	return nil
}

// --- events ---

func scanEvent(r scanner) (*anvilv1.Event, error) {
	var (
		e       anvilv1.Event
		at      sql.NullInt64
		typ     int64
		prog    []byte
		hasProg bool
	)
	if err := r.Scan(&e.Seq, &e.MachineId, &at, &typ, &e.Message, &e.Actor, &e.InstructionId, &prog, &hasProg); err != nil {
		return nil, err
	}
	e.Time = decTimestamp(at)
	e.Type = anvilv1.EventType(typ)
	var err error
	if e.Progress, err = decMsg[anvilv1.Progress](prog, hasProg); err != nil {
		return nil, fmt.Errorf("decode event %d progress: %w", e.Seq, err)
	}
	return &e, nil
}

func (t *tx) AppendEvent(ctx context.Context, e *anvilv1.Event) error {
	if e == nil {
		return errors.New("append event: nil event")
	}
	at, err := encTimestamp(e.GetTime())
	if err != nil {
		return fmt.Errorf("append event for machine %q: time: %w", e.GetMachineId(), err)
	}
	prog, err := encMsg(e.GetProgress())
	if err != nil {
		return fmt.Errorf("append event for machine %q: progress: %w", e.GetMachineId(), err)
	}
	var seq int64
	err = t.queryRow(ctx, qInsertEvent, e.GetMachineId(), at, int64(e.GetType()), e.GetMessage(), e.GetActor(), e.GetInstructionId(), prog).Scan(&seq)
	if err != nil {
		return fmt.Errorf("append event for machine %q: %w", e.GetMachineId(), t.d.classify(err, store.ErrNotFound))
	}
	e.Seq = seq
	return nil
}

func (t *tx) ListEvents(ctx context.Context, machineID string, afterSeq int64, limit int) ([]*anvilv1.Event, error) {
	if limit < 0 {
		return nil, fmt.Errorf("list events of machine %q: negative limit %d", machineID, limit)
	}
	var (
		q    string
		args []any
	)
	switch {
	case machineID == "" && limit == 0:
		q, args = qListEvents, []any{afterSeq}
	case machineID == "":
		q, args = qListEventsLimit, []any{afterSeq, limit}
	case limit == 0:
		q, args = qListMachineEvents, []any{machineID, afterSeq}
	default:
		q, args = qListMachineEventsLimit, []any{machineID, afterSeq, limit}
	}
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events of machine %q after %d: %w", machineID, afterSeq, err)
	}
	evs, err := collect(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("list events of machine %q after %d: %w", machineID, afterSeq, err)
	}
	return evs, nil
}

func (t *tx) LastEvents(ctx context.Context, machineID string, limit int) ([]*anvilv1.Event, error) {
	if limit < 0 {
		return nil, fmt.Errorf("last events of machine %q: negative limit %d", machineID, limit)
	}
	q, args := qLastEvents, []any{machineID}
	if limit > 0 {
		q, args = qLastEventsLimit, append(args, limit)
	}
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("last events of machine %q: %w", machineID, err)
	}
	evs, err := collect(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("last events of machine %q: %w", machineID, err)
	}
	return evs, nil
}

func (t *tx) TrimEvents(ctx context.Context, machineID string, keep int) error {
	if keep < 0 {
		return fmt.Errorf("trim events of machine %q: negative keep %d", machineID, keep)
	}
	var bound int64
	err := t.queryRow(ctx, qTrimBound, machineID, keep).Scan(&bound)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // keep or fewer events: nothing to trim
	}
	if err == nil {
		_, err = t.exec(ctx, qTrimEvents, machineID, bound)
	}
	if err != nil {
		return fmt.Errorf("trim events of machine %q to %d: %w", machineID, keep, err)
	}
	return nil
}

// --- instructions ---

func scanInstruction(r scanner) (*store.Instruction, error) {
	var (
		in                        store.Instruction
		payload                   []byte
		created, acked, cancelled sql.NullInt64
	)
	if err := r.Scan(&in.ID, &in.MachineID, &payload, &created, &acked, &cancelled); err != nil {
		return nil, err
	}
	var err error
	if in.Instruction, err = decMsg[anvilv1.Instruction](payload, true); err != nil {
		return nil, fmt.Errorf("decode instruction %q: %w", in.ID, err)
	}
	in.CreatedAt = decTime(created)
	in.AckedAt = decTime(acked)
	in.CancelledAt = decTime(cancelled)
	return &in, nil
}

func (t *tx) CreateInstruction(ctx context.Context, in *store.Instruction) error {
	if in == nil {
		return errors.New("create instruction: nil instruction")
	}
	args, err := instructionArgs(in)
	if err != nil {
		return fmt.Errorf("create instruction %q for machine %q: %w", in.ID, in.MachineID, err)
	}
	if _, err := t.exec(ctx, qInsertInstruction, args...); err != nil {
		// A foreign key violation means the machine does not exist.
		return fmt.Errorf("create instruction %q for machine %q: %w", in.ID, in.MachineID, t.d.classify(err, store.ErrNotFound))
	}
	return nil
}

func instructionArgs(in *store.Instruction) ([]any, error) {
	switch {
	case in.ID == "":
		return nil, errors.New("empty id")
	case in.Instruction == nil:
		return nil, errors.New("nil payload")
	case in.Instruction.GetId() != in.ID:
		return nil, fmt.Errorf("payload id %q differs from id", in.Instruction.GetId())
	}
	payload, err := encMsg(in.Instruction)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	args := []any{in.ID, in.MachineID, payload}
	for _, ts := range []time.Time{in.CreatedAt, in.AckedAt, in.CancelledAt} {
		v, err := encTime(ts)
		if err != nil {
			return nil, err
		}
		args = append(args, v)
	}
	return args, nil
}

func (t *tx) PendingInstructions(ctx context.Context, machineID string) ([]*store.Instruction, error) {
	rows, err := t.query(ctx, qPendingInstructions, machineID)
	if err != nil {
		return nil, fmt.Errorf("pending instructions of machine %q: %w", machineID, err)
	}
	ins, err := collect(rows, scanInstruction)
	if err != nil {
		return nil, fmt.Errorf("pending instructions of machine %q: %w", machineID, err)
	}
	return ins, nil
}

func (t *tx) GetInstruction(ctx context.Context, id string) (*store.Instruction, error) {
	in, err := scanInstruction(t.queryRow(ctx, qGetInstruction, id))
	if err != nil {
		return nil, fmt.Errorf("get instruction %q: %w", id, notFound(err))
	}
	return in, nil
}

func (t *tx) AckInstruction(ctx context.Context, id string, at time.Time) (bool, error) {
	if at.IsZero() {
		return false, fmt.Errorf("ack instruction %q: zero time", id)
	}
	v, err := encTime(at)
	if err != nil {
		return false, fmt.Errorf("ack instruction %q: %w", id, err)
	}
	err = t.execOne(ctx, qAckInstruction, v, id)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("ack instruction %q: %w", id, err)
	}
	// Not updated: acked already, or absent.
	var n int
	if err := t.queryRow(ctx, qInstructionExists, id).Scan(&n); err != nil {
		return false, fmt.Errorf("ack instruction %q: %w", id, err)
	}
	if n == 0 {
		return false, fmt.Errorf("ack instruction %q: %w", id, store.ErrNotFound)
	}
	return false, nil
}

func (t *tx) CancelPending(ctx context.Context, machineID string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("cancel pending instructions of machine %q: zero time", machineID)
	}
	v, err := encTime(at)
	if err == nil {
		_, err = t.exec(ctx, qCancelPending, v, machineID)
	}
	if err != nil {
		return fmt.Errorf("cancel pending instructions of machine %q: %w", machineID, err)
	}
	return nil
}

// --- images ---

func scanImage(r scanner) (*anvilv1.Image, error) {
	var b []byte
	if err := r.Scan(&b); err != nil {
		return nil, err
	}
	return decMsg[anvilv1.Image](b, true)
}

func (t *tx) CreateImage(ctx context.Context, img *anvilv1.Image) error {
	if img.GetId() == "" {
		return errors.New("create image: empty id")
	}
	payload, err := encMsg(img)
	if err != nil {
		return fmt.Errorf("create image %q: %w", img.GetId(), err)
	}
	created, err := encTimestamp(img.GetCreatedAt())
	if err != nil {
		return fmt.Errorf("create image %q: created_at: %w", img.GetId(), err)
	}
	_, err = t.exec(ctx, qInsertImage, img.GetId(), payload, img.GetUrl(), int64(img.GetFormat()), img.GetOs(), img.GetVersion(), created)
	if err != nil {
		return fmt.Errorf("create image %q: %w", img.GetId(), t.d.classify(err, nil))
	}
	return nil
}

func (t *tx) GetImage(ctx context.Context, id string) (*anvilv1.Image, error) {
	img, err := scanImage(t.queryRow(ctx, qGetImage, id))
	if err != nil {
		return nil, fmt.Errorf("get image %q: %w", id, notFound(err))
	}
	return img, nil
}

func (t *tx) ListImages(ctx context.Context) ([]*anvilv1.Image, error) {
	rows, err := t.query(ctx, qListImages)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	imgs, err := collect(rows, scanImage)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

func (t *tx) DeleteImage(ctx context.Context, id string) error {
	if err := t.execOne(ctx, qDeleteImage, id); err != nil {
		return fmt.Errorf("delete image %q: %w", id, err)
	}
	return nil
}

// --- sizes ---

func scanSize(r scanner) (*anvilv1.Size, error) {
	var b []byte
	if err := r.Scan(&b); err != nil {
		return nil, err
	}
	return decMsg[anvilv1.Size](b, true)
}

func (t *tx) CreateSize(ctx context.Context, s *anvilv1.Size) error {
	if s.GetId() == "" {
		return errors.New("create size: empty id")
	}
	payload, err := encMsg(s)
	if err != nil {
		return fmt.Errorf("create size %q: %w", s.GetId(), err)
	}
	if _, err := t.exec(ctx, qInsertSize, s.GetId(), payload); err != nil {
		return fmt.Errorf("create size %q: %w", s.GetId(), t.d.classify(err, nil))
	}
	return nil
}

func (t *tx) GetSize(ctx context.Context, id string) (*anvilv1.Size, error) {
	s, err := scanSize(t.queryRow(ctx, qGetSize, id))
	if err != nil {
		return nil, fmt.Errorf("get size %q: %w", id, notFound(err))
	}
	return s, nil
}

func (t *tx) ListSizes(ctx context.Context) ([]*anvilv1.Size, error) {
	rows, err := t.query(ctx, qListSizes)
	if err != nil {
		return nil, fmt.Errorf("list sizes: %w", err)
	}
	sizes, err := collect(rows, scanSize)
	if err != nil {
		return nil, fmt.Errorf("list sizes: %w", err)
	}
	return sizes, nil
}

func (t *tx) DeleteSize(ctx context.Context, id string) error {
	if err := t.execOne(ctx, qDeleteSize, id); err != nil {
		return fmt.Errorf("delete size %q: %w", id, err)
	}
	return nil
}
