-- 0003: what the controller keeps about a machine's agent sessions
-- (store.Trust as JSON) and the inventory of a registration that awaits an
-- operator's approval (NULL when none).
ALTER TABLE machines ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';
ALTER TABLE machines ADD COLUMN held_inventory {{bytes}};
