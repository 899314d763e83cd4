-- 0001: machines, their events and instructions, images and sizes.
--
-- Written once for SQLite and PostgreSQL: the serial_pk and bytes tokens in
-- double braces are replaced per dialect. Conventions:
--   * protobuf messages are deterministic binary proto.Marshal output;
--     NULL stands for a nil message, an empty value for an empty message;
--   * lifecycle.Status, MAC lists and labels are JSON text;
--   * times are UTC unix nanoseconds (BIGINT); NULL is the zero time.

CREATE TABLE machines (
	id              TEXT PRIMARY KEY,
	uuid            TEXT NOT NULL UNIQUE,
	macs            TEXT NOT NULL,
	inventory       {{bytes}},
	size_id         TEXT NOT NULL,
	labels          TEXT NOT NULL,
	allocation      {{bytes}},
	-- allocated and hostname duplicate allocation for filtering.
	allocated       BOOLEAN NOT NULL,
	hostname        TEXT,
	status          TEXT NOT NULL,
	-- state duplicates status.state for filtering.
	state           INTEGER NOT NULL,
	-- NULL when the machine has no credential; NULLs never collide.
	credential_hash {{bytes}} UNIQUE,
	created_at      BIGINT,
	last_seen       BIGINT,
	progress        {{bytes}}
);
CREATE INDEX machines_state_size ON machines (state, size_id);
CREATE INDEX machines_hostname ON machines (hostname);

CREATE TABLE events (
	seq            {{serial_pk}},
	machine_id     TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
	time           BIGINT,
	type           INTEGER NOT NULL,
	message        TEXT NOT NULL,
	instruction_id TEXT NOT NULL,
	progress       {{bytes}}
);
CREATE INDEX events_machine_seq ON events (machine_id, seq);

CREATE TABLE instructions (
	id           TEXT PRIMARY KEY,
	machine_id   TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
	payload      {{bytes}} NOT NULL,
	created_at   BIGINT,
	acked_at     BIGINT,
	cancelled_at BIGINT
);
CREATE INDEX instructions_machine ON instructions (machine_id);
CREATE INDEX instructions_pending ON instructions (machine_id, created_at, id)
	WHERE acked_at IS NULL AND cancelled_at IS NULL;

CREATE TABLE images (
	id         TEXT PRIMARY KEY,
	payload    {{bytes}} NOT NULL,
	url        TEXT NOT NULL,
	format     INTEGER NOT NULL,
	os         TEXT NOT NULL,
	version    TEXT NOT NULL,
	created_at BIGINT
);

CREATE TABLE sizes (
	id      TEXT PRIMARY KEY,
	payload {{bytes}} NOT NULL
);
