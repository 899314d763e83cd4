-- 0004: who caused an event (an operator's token fingerprint and address,
-- or "controller (why)"); '' for events the machine reported.
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
