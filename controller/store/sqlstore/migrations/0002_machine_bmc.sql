-- 0002: the machine's BMC address (controller/bmc), set by the operator;
-- '' when the machine has none.
ALTER TABLE machines ADD COLUMN bmc TEXT NOT NULL DEFAULT '';
