"""Binance error codes → what the executor does next, in one table (``BINANCE-PROTOCOL.md`` §3, §7).

Reactions:

- ``retry``: send the same request again after backoff (same client order id).
- ``repair``: fix what ``action`` names (clock, size, price, endpoint…), then send again — once.
- ``drop``: give this order up, log it, continue.
- ``alarm``: a bug, a bad key or a config mismatch: stop sending for the account and alert.
- ``query_first``: the outcome is unknown; query by ``origClientOrderId`` before anything is re-sent.
- ``benign``: the wanted state already holds (margin type already set, order already gone).

``-4142`` ("REJECT: take profit or stop order will be triggered immediately") is the algo service's way of saying
what ``-2021`` says: the trigger is already passed. Both get the same rule, and the order manager closes the position
at market for either (``BINANCE-PROTOCOL.md`` lists -2021 only; -4142 is in Binance's USDⓈ-M error-code list).

Deliberate choices: ``-1000`` (UNKNOWN) is ``query_first`` rather than the doc's "retry", because a
placement may have gone through and Binance keeps client ids unique only among *open* orders; a
retry follows if the query finds nothing. HTTP 503 "Unknown error" is ``query_first``, 503 "Service
Unavailable" is ``retry``, other 5xx and 408 (no body code) are ``query_first``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = ["REACTIONS", "STALE_RULES", "TIMEOUT", "Reaction", "Rule", "banned_until_ms", "reaction_for"]


class Reaction(StrEnum):
    """What to do with a failed request (see the module docstring)."""

    RETRY = "retry"
    REPAIR = "repair"
    DROP = "drop"
    ALARM = "alarm"
    QUERY_FIRST = "query_first"
    BENIGN = "benign"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: the reaction, the concrete step (``action``) and Binance's name for the code."""

    reaction: Reaction
    action: str
    name: str


R, P, D, A, Q, B = (Reaction.RETRY, Reaction.REPAIR, Reaction.DROP, Reaction.ALARM, Reaction.QUERY_FIRST,
                    Reaction.BENIGN)

REACTIONS: Mapping[int, Rule] = MappingProxyType({
    -1000: Rule(Q, "query_order_then_retry", "UNKNOWN"),
    -1001: Rule(R, "backoff", "DISCONNECTED"),
    -1003: Rule(R, "wait_until_ban_ends", "TOO_MANY_REQUESTS"),
    -1006: Rule(Q, "query_order", "UNEXPECTED_RESP"),
    -1007: Rule(Q, "query_order", "TIMEOUT"),
    -1008: Rule(R, "backoff_and_reduce_concurrency", "REQUEST_THROTTLED"),
    -1013: Rule(P, "revalidate_filters", "INVALID_MESSAGE"),
    -1015: Rule(R, "slow_order_flow", "TOO_MANY_ORDERS"),
    -1021: Rule(P, "resync_clock_and_resign", "INVALID_TIMESTAMP"),
    -1022: Rule(A, "check_secret_and_signing", "INVALID_SIGNATURE"),
    -1102: Rule(A, "fix_request_bug", "MANDATORY_PARAM_EMPTY_OR_MALFORMED"),
    -1106: Rule(A, "check_position_mode", "PARAM_NOT_REQUIRED"),
    -1111: Rule(P, "refresh_exchange_info_and_reformat", "BAD_PRECISION"),
    -1121: Rule(D, "refresh_exchange_info", "BAD_SYMBOL"),
    -1125: Rule(P, "recreate_listen_key", "INVALID_LISTEN_KEY"),
    -2011: Rule(B, "order_already_gone", "CANCEL_REJECTED"),
    -2013: Rule(B, "order_absent", "NO_SUCH_ORDER"),
    -2014: Rule(A, "check_api_key", "BAD_API_KEY_FMT"),
    -2015: Rule(A, "check_api_key_ip_permissions", "REJECTED_MBX_KEY"),
    -2019: Rule(P, "shrink_size", "MARGIN_NOT_SUFFICIEN"),
    -2021: Rule(P, "recompute_trigger_or_close", "ORDER_WOULD_IMMEDIATELY_TRIGGER"),
    -2022: Rule(P, "cancel_conflicting_or_check_position", "REDUCE_ONLY_REJECT"),
    -2024: Rule(D, "reconcile_position", "POSITION_NOT_SUFFICIENT"),
    -2025: Rule(D, "reconcile_open_orders", "MAX_OPEN_ORDER_EXCEEDED"),
    -2027: Rule(P, "lower_leverage_or_size", "MAX_LEVERAGE_RATIO"),
    -2028: Rule(P, "raise_leverage_or_lower_size", "MIN_LEVERAGE_RATIO"),
    -4003: Rule(A, "fix_quantity_bug", "QTY_LESS_THAN_ZERO"),
    -4004: Rule(P, "clamp_quantity_to_lot_size", "QTY_LESS_THAN_MIN_QTY"),
    -4005: Rule(P, "clamp_quantity_to_lot_size", "QTY_GREATER_THAN_MAX_QTY"),
    -4014: Rule(P, "round_price_to_tick", "PRICE_NOT_INCREASED_BY_TICK_SIZE"),
    -4016: Rule(P, "clamp_price_to_percent_band", "PRICE_HIGHER_THAN_MULTIPLIER_UP"),
    -4023: Rule(P, "floor_quantity_to_step", "QTY_NOT_INCREASED_BY_STEP_SIZE"),
    -4024: Rule(P, "clamp_price_to_percent_band", "PRICE_LOWER_THAN_MULTIPLIER_DOWN"),
    -4028: Rule(P, "use_leverage_bracket", "INVALID_LEVERAGE"),
    -4046: Rule(B, "margin_type_already_set", "NO_NEED_TO_CHANGE_MARGIN_TYPE"),
    -4059: Rule(B, "position_side_already_set", "NO_NEED_TO_CHANGE_POSITION_SIDE"),
    -4061: Rule(A, "check_position_mode", "POSITION_SIDE_NOT_MATCH"),
    -4116: Rule(Q, "query_order", "DUPLICATED_CLIENT_ORDER_ID"),
    -4118: Rule(D, "reconcile_position", "REDUCE_ONLY_MARGIN_CHECK_FAILED"),
    -4120: Rule(P, "use_algo_order_endpoint", "STOP_ORDER_SWITCH_ALGO"),
    -4131: Rule(P, "smaller_or_limit_order", "MARKET_ORDER_REJECT"),
    -4140: Rule(D, "refresh_exchange_info", "INVALID_OPENING_POSITION_STATUS"),
    -4142: Rule(P, "recompute_trigger_or_close", "STRATEGY_INVALID_TRIGGER_PRICE"),
    -4164: Rule(D, "below_min_notional", "MIN_NOTIONAL"),
    -4400: Rule(D, "reduce_only_allowed", "QUANTITATIVE_RULES"),
    -4401: Rule(D, "reduce_only_allowed", "LARGE_POSITION_RULES"),
    -5021: Rule(D, "not_filled_immediately", "FOK_ORDER_REJECT"),
    -5022: Rule(P, "reprice", "GTX_ORDER_REJECT"),
    -5028: Rule(P, "resync_clock_and_resign", "ME_RECVWINDOW_REJECT"),
})
"""The only place that maps a Binance code to a reaction."""

STALE_RULES = frozenset({"refresh_exchange_info_and_reformat", "refresh_exchange_info", "revalidate_filters",
                         "round_price_to_tick", "floor_quantity_to_step", "clamp_quantity_to_lot_size"})
"""Actions that mean our copy of the exchange's rules is stale: our own filters produced the request (precision,
tick, step, lot size) or named the symbol (unknown, not trading), so the exchange changed them. The live broker
reports these (``LiveBroker.on_stale_rules``) and the process re-reads exchangeInfo at once instead of at the next
hourly refresh. Price-band refusals (-4016/-4024) are not among them: the price moved, not the rules."""

TIMEOUT = Rule(Q, "query_order", "CLIENT_TIMEOUT")
"""No answer at all (our timeout or a broken connection after the request left)."""
_UNKNOWN_503 = Rule(Q, "query_order", "HTTP_503_UNKNOWN")
_UNAVAILABLE_503 = Rule(R, "backoff", "HTTP_503_UNAVAILABLE")
_RATE_LIMITED = Rule(R, "wait_until_ban_ends", "HTTP_429_418")
_SERVER_SIDE = Rule(Q, "query_order", "HTTP_5XX_OR_408")
_FORBIDDEN = Rule(A, "check_waf_or_ip", "HTTP_403")
_UNLISTED = Rule(D, "log_unlisted_code", "UNLISTED")


def reaction_for(status: int, code: int | None, message: str = "") -> Rule:
    """The rule for one failed response: HTTP 503 "unknown" first, then the code table, then the status."""
    if status == 503 and "unknown error" in message.lower():
        return _UNKNOWN_503
    if code is not None and code in REACTIONS:
        return REACTIONS[code]
    if status in (418, 429):
        return _RATE_LIMITED
    if status == 503:
        return _UNAVAILABLE_503
    if status >= 500 or status == 408:
        return _SERVER_SIDE
    if status in (401, 403):
        return _FORBIDDEN
    return _UNLISTED


_BANNED_UNTIL = re.compile(r"banned until (\d{13})")


def banned_until_ms(message: str) -> int | None:
    """The epoch-ms end of an IP ban quoted in a -1003 / HTTP 418 message, if any."""
    match = _BANNED_UNTIL.search(message)
    return int(match.group(1)) if match else None
