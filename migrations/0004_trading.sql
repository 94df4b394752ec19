-- Trading state: PostgreSQL is the source of truth for signals, orders, fills, the open book, closed
-- trades and the learner's experience. Money is numeric (exact Decimal round trip), times are UTC epoch
-- milliseconds (bigint) plus timestamptz audit columns, features are float8[].

-- Every signal the strategy produced and what the risk manager decided about it.
CREATE TABLE IF NOT EXISTS signals (
    signal_id           text        PRIMARY KEY,
    symbol              text        NOT NULL,
    side                text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    open_time           bigint      NOT NULL,
    price               numeric     NOT NULL,
    confidence          float8      NOT NULL,
    expected_return_pct float8,
    stop_pct            float8      NOT NULL,
    target_pct          float8      NOT NULL,
    setup               text        NOT NULL,
    features            float8[]    NOT NULL DEFAULT '{}',
    schema_version      text        NOT NULL DEFAULT '',
    model_version       bigint,
    created_ms          bigint      NOT NULL,
    decision            text        NOT NULL CHECK (decision IN ('open', 'skip', 'rotate')),
    decision_reason     text        NOT NULL DEFAULT '',
    decision_detail     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    inserted_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS signals_symbol_time ON signals (symbol, open_time);

-- Our orders, plain and algo (conditional): the key is our client id (newClientOrderId / clientAlgoId).
CREATE TABLE IF NOT EXISTS orders (
    client_order_id text        PRIMARY KEY,
    signal_id       text        NOT NULL,
    symbol          text        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    kind            text        NOT NULL CHECK (kind IN ('entry', 'stop_loss', 'take_profit', 'exit')),
    order_type      text        NOT NULL,
    algo            boolean     NOT NULL DEFAULT false,
    quantity        numeric,
    price           numeric,
    trigger_price   numeric,
    reduce_only     boolean     NOT NULL DEFAULT false,
    close_position  boolean     NOT NULL DEFAULT false,
    status          text        NOT NULL CHECK (status <> ''),
    exchange_id     bigint,
    attempt         integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    last_error      text,
    created_ms      bigint      NOT NULL,
    updated_ms      bigint      NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (quantity IS NOT NULL OR close_position)
);
CREATE INDEX IF NOT EXISTS orders_signal ON orders (signal_id);

-- One row per execution; a fill reported twice (stream + REST query) is stored once.
CREATE TABLE IF NOT EXISTS fills (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol          text        NOT NULL,
    trade_id        bigint      NOT NULL,
    client_order_id text        NOT NULL,
    order_id        bigint      NOT NULL DEFAULT 0,
    side            text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    qty             numeric     NOT NULL CHECK (qty > 0),
    price           numeric     NOT NULL CHECK (price > 0),
    fee             numeric     NOT NULL,
    realized_pnl    numeric     NOT NULL DEFAULT 0,
    time_ms         bigint      NOT NULL,
    is_maker        boolean     NOT NULL DEFAULT false,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (symbol, trade_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS fills_client_order ON fills (client_order_id);

-- The open book, one row per symbol (one-way mode). entry_time_ms survives a restart (2-hour limit).
CREATE TABLE IF NOT EXISTS positions (
    symbol        text        PRIMARY KEY,
    side          text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    quantity      numeric     NOT NULL CHECK (quantity >= 0),
    entry_price   numeric     NOT NULL,
    entry_time_ms bigint      NOT NULL,
    signal_id     text        NOT NULL DEFAULT '',
    confidence    float8      NOT NULL DEFAULT 0,
    leverage      integer     NOT NULL DEFAULT 1 CHECK (leverage >= 1),
    stop_price    numeric,
    target_price  numeric,
    sl_client_id  text,
    tp_client_id  text,
    status        text        NOT NULL CHECK (status IN ('opening', 'open', 'closing')),
    updated_ms    bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Closed round trips; one per signal.
CREATE TABLE IF NOT EXISTS trades (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signal_id      text        NOT NULL UNIQUE,
    symbol         text        NOT NULL,
    side           text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    quantity       numeric     NOT NULL CHECK (quantity > 0),
    entry_price    numeric     NOT NULL,
    exit_price     numeric     NOT NULL,
    entry_time_ms  bigint      NOT NULL,
    exit_time_ms   bigint      NOT NULL,
    fees           numeric     NOT NULL,
    gross_pnl      numeric     NOT NULL,
    net_pnl        numeric     NOT NULL,
    net_return_pct float8      NOT NULL,
    exit_reason    text        NOT NULL CHECK (exit_reason IN ('take_profit', 'stop_loss', 'time_limit', 'rotation',
                                                               'liquidation', 'adl', 'manual', 'shutdown',
                                                               'daily_breaker', 'reconciled')),
    confidence     float8      NOT NULL DEFAULT 0,
    model_version  bigint,
    inserted_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (exit_time_ms >= entry_time_ms)
);
CREATE INDEX IF NOT EXISTS trades_exit_time ON trades (exit_time_ms);

-- The learner's input: one row per closed trade, written in the same transaction as the trade.
CREATE TABLE IF NOT EXISTS experience (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_id       bigint      NOT NULL UNIQUE REFERENCES trades (id),
    symbol         text        NOT NULL,
    side           text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    features       float8[]    NOT NULL,
    schema_version text        NOT NULL CHECK (schema_version <> ''),
    net_return_pct float8      NOT NULL CHECK (net_return_pct <> 'NaN'::float8),
    signal_time_ms bigint      NOT NULL,
    closed_ms      bigint      NOT NULL,
    model_version  bigint,
    inserted_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS experience_schema_closed ON experience (schema_version, closed_ms);

-- Things that need a human: an exit that failed after its retries, an unknown position found, ...
CREATE TABLE IF NOT EXISTS alarms (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind <> ''),
    detail      text        NOT NULL DEFAULT '',
    time_ms     bigint      NOT NULL,
    resolved_at timestamptz,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (time_ms) WHERE resolved_at IS NULL;
