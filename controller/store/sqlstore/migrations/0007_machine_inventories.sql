-- 0007: a machine's inventories move out of its row. SQLite writes a whole
-- row again on every UPDATE, its overflow pages included: the 20 KB of a
-- large server's hardware were written again with each change of state,
-- progress or last-seen. Here they are written only when the machine is
-- written whole (a registration, an approval, an allocation, an operator's
-- edit), not by the updates that read it Light (store.Machine.Light).
--   inventory       the last trusted inventory (NULL: none);
--   held_inventory  a registration's awaiting approval (NULL: none).
-- A machine without either has no row.
CREATE TABLE machine_inventories (
	machine_id     TEXT PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
	inventory      {{bytes}},
	held_inventory {{bytes}}
);
INSERT INTO machine_inventories (machine_id, inventory, held_inventory)
	SELECT id, inventory, held_inventory FROM machines
	WHERE inventory IS NOT NULL OR held_inventory IS NOT NULL;
ALTER TABLE machines DROP COLUMN inventory;
ALTER TABLE machines DROP COLUMN held_inventory;
