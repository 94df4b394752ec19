-- Model registry: one row per trained model; status candidate -> champion -> retired.
-- At most one champion at a time (partial unique index). Training window in UTC epoch milliseconds
-- (the candles' open_time of the first and last training setup). artifact = LightGBM text model, UTF-8.
-- rolled_back_at marks a champion removed by a rollback, so a second rollback goes further back.
CREATE TABLE IF NOT EXISTS models (
    version         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status          text        NOT NULL DEFAULT 'candidate'
                                CHECK (status IN ('candidate', 'champion', 'retired')),
    feature_schema  text        NOT NULL,
    train_start     bigint      NOT NULL,
    train_end       bigint      NOT NULL,
    params          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metrics         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    artifact        bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz,
    retired_at      timestamptz,
    rolled_back_at  timestamptz,
    CHECK (train_end >= train_start)
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_champion ON models ((true)) WHERE status = 'champion';
