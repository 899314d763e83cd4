package sqlstore

import (
	"database/sql"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Migration 0007 moves the inventories out of the machines row: a database
// written by a binary that knew up to 0006 keeps every machine's
// inventory and held inventory, a machine without them has none, and a
// Light update afterwards leaves them as they were.
func TestUpgradeMovesInventoriesSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	testUpgradeMovesInventories(t, db, sqliteDialect(), func() store.Store { return openTest(t, path) })
}

func TestUpgradeMovesInventoriesPostgres(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	testUpgradeMovesInventories(t, db, postgresDialect(), func() store.Store { return openPostgresTest(t, dsn) })
}

// rawDB is the store's write pool, for looking at the schema itself.
func rawDB(t *testing.T, s store.Store) *sql.DB {
	t.Helper()
	st, ok := s.(*Store)
	if !ok {
		t.Fatalf("store is %T, want *Store", s)
	}
	return st.write
}

func testUpgradeMovesInventories(t *testing.T, db *sql.DB, d *dialect, open func() store.Store) {
	ctx := t.Context()
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 7 || ms[6].name != "0007_machine_inventories.sql" {
		t.Fatalf("migrations %d, want 0007_machine_inventories.sql as the seventh", len(ms))
	}
	if err := migrate(ctx, db, d, ms[:6], slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	inv := &anvilv1.Inventory{Product: &anvilv1.Product{Name: "R650", Serial: "S1"}, Disks: []*anvilv1.Disk{{Name: "sda", SizeBytes: 1 << 40}}}
	held := &anvilv1.Inventory{Product: &anvilv1.Product{Name: "R650", Serial: "S2"}}
	invB, err := proto.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	heldB, err := proto.Marshal(held)
	if err != nil {
		t.Fatal(err)
	}
	insert := d.rebind(`INSERT INTO machines (id, uuid, macs, inventory, size_id, labels, allocated, status, state, held_inventory)
		VALUES (?, ?, '[]', ?, '', '{}', false, '{"state":3}', 3, ?)`)
	for _, row := range []struct {
		id        string
		inv, held []byte
	}{{"both", invB, heldB}, {"inventory", invB, nil}, {"none", nil, nil}} {
		if _, err := db.ExecContext(ctx, insert, row.id, "uuid-"+row.id, row.inv, row.held); err != nil {
			t.Fatalf("insert %s: %v", row.id, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := open()
	// The columns are gone from machines (nothing keeps a second copy),
	// and a machine without inventories has no row.
	raw := rawDB(t, s)
	for _, col := range []string{"inventory", "held_inventory"} {
		if _, err := raw.ExecContext(ctx, "SELECT "+col+" FROM machines"); err == nil {
			t.Errorf("machines.%s still exists after the upgrade", col)
		}
	}
	var rows int
	if err := raw.QueryRowContext(ctx, d.rebind("SELECT COUNT(*) FROM machine_inventories WHERE machine_id = ?"), "none").Scan(&rows); err != nil || rows != 0 {
		t.Errorf("inventory rows of a machine without any: %d, %v; want 0", rows, err)
	}
	want := map[string][2]*anvilv1.Inventory{"both": {inv, held}, "inventory": {inv, nil}, "none": {nil, nil}}
	check := func(when string) {
		t.Helper()
		err := s.View(ctx, func(tx store.Tx) error {
			for id, w := range want {
				m, err := tx.GetMachine(ctx, id)
				if err != nil {
					return err
				}
				if !proto.Equal(m.Inventory, w[0]) || (m.Inventory == nil) != (w[0] == nil) {
					t.Errorf("%s: machine %s inventory %v, want %v", when, id, m.Inventory, w[0])
				}
				if !proto.Equal(m.HeldInventory, w[1]) || (m.HeldInventory == nil) != (w[1] == nil) {
					t.Errorf("%s: machine %s held inventory %v, want %v", when, id, m.HeldInventory, w[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("after the upgrade")
	if err := s.Tx(ctx, func(tx store.Tx) error {
		for id := range want {
			m, err := tx.GetMachineLight(ctx, id)
			if err != nil {
				return err
			}
			m.Labels = map[string]string{"touched": "yes"}
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("after Light updates")
	// A whole update that drops both inventories removes them.
	if err := s.Tx(ctx, func(tx store.Tx) error {
		m, err := tx.GetMachine(ctx, "both")
		if err != nil {
			return err
		}
		m.Inventory, m.HeldInventory = nil, nil
		return tx.UpdateMachine(ctx, m)
	}); err != nil {
		t.Fatal(err)
	}
	want["both"] = [2]*anvilv1.Inventory{}
	check("after the inventories were dropped")
}
