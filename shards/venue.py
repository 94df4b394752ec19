"""The signed broker of the configured Binance account, built from the settings (the trading stack's and the
``report`` command's)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from smc_quant.settings import Settings

if TYPE_CHECKING:
    from smc_quant.exchange.trade_client import LiveBroker


def live_broker(settings: Settings, session: aiohttp.ClientSession, governor: Any) -> LiveBroker:
    """The signed broker of the configured account (keys, venue, recvWindow, timeouts from ``settings``)."""
    from smc_quant.exchange.trade_client import LiveBroker
    from smc_quant.orders.limiter import OrderLimiter
    from smc_quant.orders.signing import RequestSigner

    s, t = settings, settings.trading
    assert s.binance_api_key is not None and s.binance_api_secret is not None
    signer = RequestSigner(s.binance_api_key.get_secret_value(), s.binance_api_secret.get_secret_value(),
                           lambda: int(time.time() * 1000), recv_window_ms=t.recv_window_ms)
    limiter = OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event)
    # the broker appends each route (``/fapi/…``, ``/private/ws``) to these roots: a trailing slash in a setting
    # must not double a separator nor hide the ``/private`` suffix (``…/private/`` dialled ``/private/private/ws``)
    rest_root = s.venue.rest_base.rstrip("/")
    ws_root = s.venue.ws_private_base.rstrip("/").removesuffix("/private")
    return LiveBroker(session, rest_root, signer, governor=governor, limiter=limiter,
                      timeout_s=t.order_timeout_s, ws_base_url=ws_root,
                      stream_options={"keepalive_s": t.listen_key_keepalive_s})


__all__ = ["live_broker"]
