-- A position closed by us before the exchange's scheduled delisting of its symbol is stored with its own exit
-- reason ('delisting'), so reports tell it from the 2-hour limit.
ALTER TABLE trades DROP CONSTRAINT IF EXISTS trades_exit_reason_check;
ALTER TABLE trades ADD CONSTRAINT trades_exit_reason_check
    CHECK (exit_reason IN ('take_profit', 'stop_loss', 'time_limit', 'rotation', 'liquidation', 'adl', 'manual',
                           'shutdown', 'daily_breaker', 'reconciled', 'delisting'));
