-- 0006: values every controller on the database must agree on (pin.go):
-- fingerprints of the keys and the CA of the data directory that first
-- used the database. A replica started from another data directory would
-- not read what the others sealed or verify what they signed.
--   name   what is pinned, e.g. "ca" or "key:bmc";
--   value  its fingerprint (never the secret itself).
CREATE TABLE pins (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
