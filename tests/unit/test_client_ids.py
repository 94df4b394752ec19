"""Our newClientOrderId scheme: Binance's regex and length, determinism per attempt, uniqueness per leg."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smc_quant.orders.client_ids import (
    CLIENT_ID_RE,
    ClientIdParts,
    Leg,
    client_order_id,
    parse_client_order_id,
    same_signal,
    signal_digest,
)


def test_known_id_is_stable_across_runs_and_versions() -> None:
    """The id of a fixed input is pinned, so a restart (or a new release) recomputes the same id."""
    assert client_order_id("BTCUSDT:1700000000000:long", Leg.ENTRY, 0) == "smc-1cfb565aeacd6d06d022-en-0"
    assert signal_digest("BTCUSDT:1700000000000:long") == "1cfb565aeacd6d06d022"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(min_size=1, max_size=300), st.sampled_from(list(Leg)), st.integers(0, 999),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=6))
def test_every_id_matches_binance_regex_and_round_trips(signal: str, leg: Leg, attempt: int, prefix: str) -> None:
    """Any signal id (unicode, long, odd characters) gives a ≤36-char id that matches the regex and parses back."""
    cid = client_order_id(signal, leg, attempt, prefix=prefix)
    assert CLIENT_ID_RE.match(cid) and len(cid) <= 36
    assert cid == client_order_id(signal, leg, attempt, prefix=prefix)
    assert parse_client_order_id(cid, prefix=prefix) == ClientIdParts(prefix, signal_digest(signal), leg, attempt)
    assert same_signal(cid, signal, prefix=prefix)


def test_ids_are_unique_per_leg_attempt_and_signal() -> None:
    """Four legs × three attempts × 500 signals give 6000 distinct ids."""
    ids = {client_order_id(f"sig-{n}", leg, attempt) for n in range(500) for leg in Leg for attempt in range(3)}
    assert len(ids) == 500 * len(Leg) * 3


def test_retry_of_the_same_attempt_reuses_the_id() -> None:
    """A resend after a timeout (same attempt) carries the same id; a new attempt gets a new one."""
    first = client_order_id("ETHUSDT:42", Leg.STOP_LOSS, 1)
    assert client_order_id("ETHUSDT:42", Leg.STOP_LOSS, 1) == first
    assert client_order_id("ETHUSDT:42", Leg.STOP_LOSS, 2) != first


@pytest.mark.parametrize("cid", ["autoclose-1234", "adl_autoclose", "testOrder", "smc-xyz-en-0",
                                 "smc-0123456789abcdef0123-zz-0", "smc-0123456789abcdef0123-en-01",
                                 "smc-0123456789abcdef0123-en-1000", "bot-e0536484551311f1b0c42676a180379c"])
def test_foreign_ids_are_not_ours(cid: str) -> None:
    """Liquidation, ADL, manual and malformed ids parse to None."""
    assert parse_client_order_id(cid) is None


@pytest.mark.parametrize(("signal", "attempt", "prefix"), [("", 0, "smc"), ("s", -1, "smc"), ("s", 1000, "smc"),
                                                          ("s", 0, "toolong"), ("s", 0, "a-b"), ("s", 0, "")])
def test_bad_inputs_are_refused(signal: str, attempt: int, prefix: str) -> None:
    """Empty signal ids, attempts outside 0..999 and prefixes that are not 1-6 letters/digits raise ValueError."""
    with pytest.raises(ValueError, match="must"):
        client_order_id(signal, Leg.ENTRY, attempt, prefix=prefix)
