-- Cached GET /fapi/v1/exchangeInfo payloads; readers take the latest row, writers prune older ones.
CREATE TABLE IF NOT EXISTS exchange_info_cache (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fetched_at timestamptz NOT NULL DEFAULT now(),
    payload    jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS exchange_info_cache_fetched_at ON exchange_info_cache (fetched_at DESC);
