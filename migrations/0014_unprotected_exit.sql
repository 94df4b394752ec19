-- A position closed by us at market because its stop could not be placed (the exchange refused it for a reason other
-- than "would immediately trigger", or kept failing) is a trade now, stored with its own exit reason: it used to be
-- stored as nothing at all when the close filled at once.
ALTER TABLE trades DROP CONSTRAINT IF EXISTS trades_exit_reason_check;
ALTER TABLE trades ADD CONSTRAINT trades_exit_reason_check
    CHECK (exit_reason IN ('take_profit', 'stop_loss', 'time_limit', 'rotation', 'liquidation', 'adl', 'manual',
                           'shutdown', 'daily_breaker', 'reconciled', 'delisting', 'unprotected'));
