-- How much of an order the exchange executed, as last known (its answer, a query, the end of a LIMIT entry's wait):
-- an entry that ended CANCELED or EXPIRED with nothing executed opened no position, so a position found on its
-- symbol later is not ours to adopt (TradingRepository.latest_entry). NULL: not known (rows written before).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS executed_qty numeric;
