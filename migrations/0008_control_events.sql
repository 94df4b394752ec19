-- The operator's hand on trading: `smc-quant halt` (no new entries), `halt --flatten` (close every position,
-- then stay halted) and `smc-quant resume`. Append-only, so it is also the audit trail: the newest row is the
-- state. A flatten row stays pending until an executor has closed every position of the book (done_at).
-- Each insert is announced with NOTIFY smc_control (the row id) so a running executor acts at once; it also
-- re-reads the newest row on a timer, so a missed notification only delays the change.
CREATE TABLE IF NOT EXISTS control_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text        NOT NULL CHECK (action IN ('halt', 'flatten', 'resume')),
    reason       text        NOT NULL DEFAULT '',
    requested_by text        NOT NULL DEFAULT '',
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
);
