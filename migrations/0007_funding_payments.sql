-- Funding the paper account paid (amount > 0) or received (amount < 0) at a funding time, per symbol. The
-- paper wallet is rebuilt from PostgreSQL at start, so what funding took from it must be stored too. (Live,
-- the exchange keeps the wallet; cross-margin FUNDING_FEE updates carry no per-symbol amount.)
CREATE TABLE IF NOT EXISTS funding_payments (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol      text        NOT NULL,
    time_ms     bigint      NOT NULL,
    rate        numeric     NOT NULL,
    amount      numeric     NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (symbol, time_ms)
);
