"""The signed broker built from the venue settings reaches the exchange's routes however the operator wrote the
base URLs: a trailing slash (``SMC_VENUE__WS_PRIVATE_BASE=wss://fstream.binance.com/private/``) once made the
user-data stream dial ``/private/private/ws`` and never connect. Real sockets against the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from shards.venue import live_broker
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.settings import load_settings

WAIT_S = 10.0


@pytest.mark.parametrize("suffix", ["/", "//"])
async def test_trailing_slashes_in_the_venue_urls_are_harmless(shared_data: Path, http: aiohttp.ClientSession,
                                                              tmp_path: Path, suffix: str) -> None:
    """REST (the listenKey POST) and the private stream both reach the emulator's routes."""
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=("BTCUSDT",))
    async with Emulator(config) as em:
        venue = {"rest_base": em.rest_url + suffix, "ws_private_base": em.ws_private_base + suffix,
                 "ws_market_base": em.ws_market_base, "ws_public_base": em.ws_public_base}
        settings = load_settings(state_dir=tmp_path, mode="replay", binance_api_key=config.api_key,
                                 binance_api_secret=config.api_secret, venue=venue)
        broker = live_broker(settings, http, WeightGovernor())
        await broker.start()
        try:
            await asyncio.wait_for(broker.stream.connected.wait(), WAIT_S)
            key = broker.stream.listen_key
            assert key is not None and em.user_data.keys.valid(key)
            assert [c.listen_key for c in em.user_data.conns.values()] == [key]
        finally:
            await broker.close()
