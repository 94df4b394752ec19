-- An entry's journal row carries what a restart needs to protect the position it opened, even when the
-- process died after the entry left but before the signal row or the position row was written: the
-- decision's stop and target prices, its leverage and the signal's confidence (all as strings/numbers in
-- JSON; money stays exact because prices are written as decimal strings).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS intent jsonb;
