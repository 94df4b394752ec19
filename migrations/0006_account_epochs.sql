-- Which account a database's trading state belongs to. The open book, the closed trades that restore the
-- daily-loss baseline and the paper wallet, and the entry orders a restart may adopt all describe ONE
-- account: the paper account, or signed trading on one venue. A new row starts a new epoch when the
-- service starts on another account; that is allowed only while the book is flat, and the history those
-- restores read begins at the epoch's start (started_at NULL: the first account owns all earlier rows).
CREATE TABLE IF NOT EXISTS account_epochs (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account    text        NOT NULL CHECK (account <> ''),
    previous   text,
    started_at timestamptz,
    started_ms bigint      NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
