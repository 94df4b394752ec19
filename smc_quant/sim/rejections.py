"""``SimRejected``: the simulated exchange said no, with Binance's error code and message.

Codes and messages follow ``BINANCE-PROTOCOL.md`` §7 so the same reaction table
(``smc_quant/orders/reactions.py``) applies to the simulator, the emulator and the live venue.
"""

from __future__ import annotations

from smc_quant.errors import VenueRejected

__all__ = ["MESSAGES", "SimRejected"]

MESSAGES: dict[int, str] = {
    -1000: "An unknown error occured while processing the request.",
    -1102: "Mandatory parameter was not sent, was empty/null, or malformed.",
    -1106: "Parameter sent when not required.",
    -1111: "Precision is over the maximum defined for this asset.",
    -1115: "Invalid timeInForce.",
    -1116: "Invalid orderType.",
    -1117: "Invalid side.",
    -1121: "Invalid symbol.",
    -2011: "Unknown order sent.",
    -2013: "Order does not exist.",
    -2019: "Margin is insufficient.",
    -2021: "Order would immediately trigger.",
    -2022: "ReduceOnly Order is rejected.",
    -2027: "Exceeded the maximum allowable position at current leverage.",
    -4003: "Quantity less than or equal to zero.",
    -4004: "Quantity less than min quantity.",
    -4005: "Quantity greater than max quantity.",
    -4006: "Stop price less than zero.",
    -4007: "Stop price greater than max price.",
    -4013: "Price less than min price.",
    -4001: "Price less than 0.",
    -4002: "Price greater than max price.",
    -4014: "Price not increased by tick size.",
    -4015: "Client order id is not valid.",
    -4016: "Price is higher than mark price multiplier cap.",
    -4023: "Quantity not increased by step size.",
    -4024: "Price is lower than mark price multiplier floor.",
    -4028: "Leverage is not valid.",
    -4044: "Margin type is not valid.",
    -4046: "No need to change margin type.",
    -4048: "Margin type cannot be changed if there exists position or open orders.",
    -4116: "ClientOrderId is duplicated.",
    -4120: "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
    -4131: "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
    -4164: "Order's notional must be no smaller than the minimum (unless you choose reduce only).",
    -5022: "Due to the order could not be executed as maker, the Post Only order will be rejected.",
}


class SimRejected(VenueRejected):
    """A request the simulated account refuses: ``.code`` is the Binance error code, ``.status`` 400.

    ``str(exc)`` is Binance's message for the code, followed by the detail (which field, which limit),
    so a test or a log line shows both what the venue would say and why; ``.msg`` is the message alone.
    """

    def __init__(self, code: int, detail: str = "") -> None:
        base = MESSAGES.get(code, "Rejected by the simulated exchange.")
        super().__init__(f"{base} ({detail})" if detail else base, status=400, code=code)
        self.msg = base
        """Binance's own message for the code (what the wire ``msg`` carries)."""
        self.detail = detail
