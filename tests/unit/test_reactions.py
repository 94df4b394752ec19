"""Every error code of BINANCE-PROTOCOL.md §7 (and -4142, the algo service's -2021) maps to its reaction, and HTTP
statuses without a code too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smc_quant.orders.reactions import REACTIONS, STALE_RULES, TIMEOUT, Reaction, banned_until_ms, reaction_for

R, P, D, A, Q, B = (Reaction.RETRY, Reaction.REPAIR, Reaction.DROP, Reaction.ALARM, Reaction.QUERY_FIRST,
                    Reaction.BENIGN)

# Written from the doc's table row by row, independently of the module's table.
EXPECTED = {
    -1000: Q, -1001: R, -1003: R, -1006: Q, -1007: Q, -1008: R, -1015: R, -1021: P, -1022: A, -1102: A,
    -1106: A, -1111: P, -1013: P, -1121: D, -1125: P, -2011: B, -2013: B, -2014: A, -2015: A, -2019: P,
    -2021: P, -2022: P, -2024: D, -2025: D, -2027: P, -2028: P, -4003: A, -4004: P, -4005: P, -4014: P,
    -4023: P, -4016: P, -4024: P, -4028: P, -4046: B, -4059: B, -4061: A, -4116: Q, -4118: D, -4120: P,
    -4131: P, -4140: D, -4164: D, -4400: D, -4401: D, -5021: D, -5022: P, -5028: P,
    # Not in the doc's table: Binance's USDⓈ-M list has -4142 STRATEGY_INVALID_TRIGGER_PRICE ("REJECT: take profit
    # or stop order will be triggered immediately"), the algo service's -2021 (tests/unit/test_would_trigger_codes.py).
    -4142: P,
}


def test_table_covers_exactly_the_codes_listed_in_the_doc() -> None:
    """One table, no code missing, none invented."""
    assert set(REACTIONS) == set(EXPECTED)


@pytest.mark.parametrize(("code", "reaction"), sorted(EXPECTED.items()))
def test_each_listed_code_has_its_reaction(code: int, reaction: Reaction) -> None:
    """A 400 with the code gets the doc's reaction and a named, non-empty action."""
    rule = reaction_for(400, code, "msg")
    assert rule.reaction == reaction and rule.action and rule.name


def test_clock_errors_resync_and_unknown_outcomes_query_first() -> None:
    """-1021/-5028 resync the clock; -1006/-1007/-4116 and timeouts query the order before any resend."""
    assert {reaction_for(400, c).action for c in (-1021, -5028)} == {"resync_clock_and_resign"}
    assert {reaction_for(400, c).reaction for c in (-1006, -1007, -4116)} == {Q}
    assert TIMEOUT.reaction == Q


@pytest.mark.parametrize(("status", "code", "message", "reaction"), [
    (503, None, "Unknown error, please check your request or try again later.", Q),
    (503, -1000, "Unknown error, please check your request or try again later.", Q),
    (503, None, "Service Unavailable.", R),
    (503, -1008, "Request throttled by system-level protection. Reduce-only/close-position orders are exempt", R),
    (429, -1003, "Too many requests; current limit is 2400 requests per minute.", R),
    (418, None, "", R),
    (408, None, "", Q),
    (502, None, "Bad Gateway", Q),
    (403, None, "WAF", A),
    (400, -9999, "new code", D),
    (400, None, "not json", D),
])
def test_http_statuses_without_a_listed_code(status: int, code: int | None, message: str, reaction: Reaction) -> None:
    """503 "unknown" is query-first, 503 "unavailable" retries, 5xx/408 query, 403 alarms, unlisted drops."""
    assert reaction_for(status, code, message).reaction == reaction


def test_ban_end_is_parsed_from_the_418_message() -> None:
    """The live -1003 text 'IP(***) banned until 1615183669840.' yields the epoch ms; other text yields None."""
    assert banned_until_ms("Way too many requests; IP(***) banned until 1615183669840.") == 1615183669840
    assert banned_until_ms("Too many requests; current limit is 2400 requests per minute.") is None


FORBIDDEN = ("asyncio", "aiohttp", "asyncpg", "redis", "websockets", "socket", "ssl", "http", "uvloop",
             "structlog", "requests", "pgserver", "subprocess", "urllib.request")


def test_importing_the_orders_package_loads_no_io_library() -> None:
    """A fresh interpreter importing every orders module gains no I/O module (asyncio, aiohttp, redis, …)."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import smc_quant.orders.filters, smc_quant.orders.signing, smc_quant.orders.client_ids\n"
        "import smc_quant.orders.reactions\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = set(out.stdout.split())
    assert "smc_quant.orders.signing" in added
    assert {m for m in added if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN} == set()


def test_stale_rules_are_the_refusals_our_own_filters_cannot_explain() -> None:
    """Precision, tick, step, lot size, an unknown or non-trading symbol: exchangeInfo is re-read at once. A price
    band, margin or trigger refusal is about the market or the account, not the rules."""
    stale = {code for code, rule in REACTIONS.items() if rule.action in STALE_RULES}
    assert stale == {-1013, -1111, -1121, -4004, -4005, -4014, -4023, -4140}
    assert all(action in {r.action for r in REACTIONS.values()} for action in STALE_RULES)  # no dead name
