-- Reads that ran at every reconciliation round over tables that only grow.
-- The newest entry journalled on a symbol (TradingRepository.latest_entry) is asked for each exchange position the
-- book does not hold — a person's position, every 3 minutes for as long as it is open: it read the whole order
-- journal (about 35 ms at 150,000 orders, three years of trading, and growing).
CREATE INDEX IF NOT EXISTS orders_entry_symbol ON orders (symbol, created_ms DESC) WHERE kind = 'entry';
-- An alarm is stored once a day while it is open, looked up by its kind and detail.
CREATE INDEX IF NOT EXISTS alarms_open_kind ON alarms (kind, detail, time_ms) WHERE resolved_at IS NULL;
