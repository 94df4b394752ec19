-- Entries whose position ended without a trade of ours: closed by someone else while the user-data stream was down
-- (no exit fill of ours to make a trade of; the reconciliation's position_vanished). Such an entry has no trade row,
-- so the adoption of a crash's orphan position (the newest entry on the symbol with no trade) would take it as
-- still open, and adopt the next position a person opens on that symbol as ours. A row here ends it for good.
CREATE TABLE IF NOT EXISTS ended_entries (
    signal_id  text        PRIMARY KEY,
    symbol     text        NOT NULL,
    reason     text        NOT NULL,
    time_ms    bigint      NOT NULL,
    ended_at   timestamptz NOT NULL DEFAULT now()
);
