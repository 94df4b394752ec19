-- Closed candles, one row per (symbol, interval, open_time); times are UTC epoch milliseconds.
CREATE TABLE IF NOT EXISTS candles (
    symbol                 text             NOT NULL,
    interval               text             NOT NULL,
    open_time              bigint           NOT NULL,
    open                   double precision NOT NULL,
    high                   double precision NOT NULL,
    low                    double precision NOT NULL,
    close                  double precision NOT NULL,
    volume                 double precision NOT NULL,
    quote_volume           double precision NOT NULL DEFAULT 0,
    trades                 bigint           NOT NULL DEFAULT 0,
    taker_buy_volume       double precision NOT NULL DEFAULT 0,
    taker_buy_quote_volume double precision NOT NULL DEFAULT 0,
    inserted_at            timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, open_time)
);
