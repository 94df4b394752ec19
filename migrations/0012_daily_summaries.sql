-- The UTC days whose daily summary was told, one row per day, claimed before the message goes out. A restart
-- across midnight then still tells the day that ended while no executor ran (the newest row is a day behind),
-- and no day is told twice (a second claim of a day inserts nothing). The figures are those of the message.
CREATE TABLE IF NOT EXISTS daily_summaries (
    day      bigint      PRIMARY KEY,  -- UTC day number: epoch milliseconds // 86 400 000
    trades   integer     NOT NULL,
    net_pnl  numeric     NOT NULL,
    equity   numeric     NOT NULL,
    told_at  timestamptz NOT NULL DEFAULT now()
);
