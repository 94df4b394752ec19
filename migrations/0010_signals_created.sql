-- The executor's duplicate filter reads the signals of the last day at every start
-- (TradingRepository.recent_signal_ids: WHERE created_ms >= $1); without an index that is a full scan of
-- every signal ever stored, a table that grows each month.
CREATE INDEX IF NOT EXISTS signals_created ON signals (created_ms);
