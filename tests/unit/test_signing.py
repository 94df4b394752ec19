"""Request signing against the official worked examples, recvWindow bounds, secrecy, and the clock offset."""

from __future__ import annotations

import pickle

import pytest

from smc_quant.errors import ConfigError
from smc_quant.orders.signing import (
    ClockOffset,
    OffsetPolicy,
    RequestSigner,
    TimeSample,
    encode_params,
    hmac_signature,
)

FUT_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
FUT_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
FUT_TS = 1591702613943
SPOT_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SPOT_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
SPOT_TS = 1499827319559


def _signer(key: str, secret: str, now: int) -> RequestSigner:
    return RequestSigner(key, secret, lambda: now)


def test_futures_official_example_in_the_query() -> None:
    """The USD-M general-info example signs to 3c661234… with the exact documented parameter order."""
    req = _signer(FUT_KEY, FUT_SECRET, FUT_TS).sign(
        [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "9000"),
         ("timeInForce", "GTC")], offset_ms=0)
    assert req.query == ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
                         "&recvWindow=5000&timestamp=1591702613943"
                         "&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9")
    assert req.body == "" and req.headers == {"X-MBX-APIKEY": FUT_KEY}


def test_futures_official_example_in_the_body() -> None:
    """The same parameters sent as a form body sign to the same value, the signature ending the body."""
    req = _signer(FUT_KEY, FUT_SECRET, FUT_TS).sign(
        body=[("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "9000"),
              ("timeInForce", "GTC")], offset_ms=0)
    assert req.query == "" and req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.body.endswith("&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9")


def test_mixed_query_and_body_sign_their_true_concatenation() -> None:
    """Query + body are concatenated with no separator: 30baaf0f… (the doc's f9d0ae5e… needs its typo)."""
    req = _signer(FUT_KEY, FUT_SECRET, FUT_TS).sign(
        [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC")],
        [("quantity", "1"), ("price", "9000")], offset_ms=0)
    assert req.query == "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    assert req.body == ("quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
                        "&signature=30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4")
    typo = ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
            "quantity=1&price=9000&recvWindow=5000&timestamp= 1591702613943")
    assert hmac_signature(FUT_SECRET.encode(), typo).startswith("f9d0ae5e")


def test_spot_official_example_and_its_non_ascii_variant() -> None:
    """The spot NhqPtmd… example signs to c8db5682…; a full-width symbol is percent-encoded before signing."""
    params = [("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1")]
    req = _signer(SPOT_KEY, SPOT_SECRET, SPOT_TS).sign([("symbol", "LTCBTC"), *params], offset_ms=0)
    assert req.query.endswith("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")
    wide = _signer(SPOT_KEY, SPOT_SECRET, SPOT_TS).sign([("symbol", "１２３４５６"), *params], offset_ms=0)
    assert wide.query.startswith("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&")
    assert wide.query.endswith("&signature=e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3")


def test_timestamp_is_the_clock_plus_the_server_offset() -> None:
    """With the clock at 1,000,000 and the server 250 ms ahead, the timestamp is 1,000,250."""
    req = _signer(FUT_KEY, FUT_SECRET, 1_000_000).sign([("symbol", "BTCUSDT")], offset_ms=250)
    assert "&recvWindow=5000&timestamp=1000250&signature=" in req.query


@pytest.mark.parametrize("window", [0, 5001, 60000])
def test_recv_window_above_5000_or_non_positive_is_refused(window: int) -> None:
    """recvWindow must be 1..5000 ms; a smaller window is carried into the request."""
    with pytest.raises(ConfigError, match="recvWindow"):
        RequestSigner(FUT_KEY, FUT_SECRET, lambda: 0, recv_window_ms=window)
    small = RequestSigner(FUT_KEY, FUT_SECRET, lambda: 7, recv_window_ms=1500).sign(offset_ms=0)
    assert small.query.startswith("recvWindow=1500&timestamp=7&signature=")


def test_caller_cannot_set_signer_owned_params_or_send_bools() -> None:
    """timestamp/recvWindow/signature belong to the signer; a Python bool would print as 'True'."""
    signer = _signer(FUT_KEY, FUT_SECRET, 0)
    with pytest.raises(ValueError, match="timestamp"):
        signer.sign([("timestamp", 1)], offset_ms=0)
    with pytest.raises(TypeError, match="reduceOnly"):
        encode_params([("reduceOnly", True)])
    assert encode_params([("reduceOnly", "true"), ("limit", 5)]) == "reduceOnly=true&limit=5"


def test_secret_never_appears_in_repr_str_or_pickle() -> None:
    """repr/str show only a key prefix and the window; pickling a signer is refused; empty keys are config errors."""
    signer = _signer(FUT_KEY, FUT_SECRET, 0)
    for text in (repr(signer), str(signer), f"{signer}", repr([signer])):
        assert FUT_SECRET not in text and FUT_KEY not in text
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(signer)
    with pytest.raises(ConfigError):
        RequestSigner("", FUT_SECRET, lambda: 0)


def test_time_sample_offset_is_server_minus_midpoint() -> None:
    """Sent at 1000, received at 1100, server says 1300: RTT 100, offset +250."""
    s = TimeSample(sent_ms=1000, server_ms=1300, received_ms=1100)
    assert (s.rtt_ms, s.offset_ms) == (100, 250)
    assert TimeSample(2000, 1500, 2040).offset_ms == -520


def test_clock_offset_keeps_lowest_rtt_sample_of_a_round() -> None:
    """Within one refresh round the lowest-RTT sample wins; slower and absurdly slow samples are ignored."""
    state = ClockOffset(OffsetPolicy(refresh_every_ms=60_000, max_rtt_ms=500))
    assert state.offset_ms == 0 and state.needs_refresh(0)
    state = state.add(TimeSample(0, 400, 300))        # rtt 300, offset 250
    state = state.add(TimeSample(1000, 1090, 1020))   # rtt 20, offset 80
    state = state.add(TimeSample(2000, 2500, 2100))   # rtt 100: slower, ignored
    state = state.add(TimeSample(3000, 9000, 4000))   # rtt 1000 > max: ignored
    assert state.offset_ms == 80 and not state.needs_refresh(30_000)


def test_clock_offset_refreshes_by_age_and_after_invalidate() -> None:
    """A round ends after refresh_every_ms or on invalidate() (-1021); the next sample replaces the old one."""
    state = ClockOffset(OffsetPolicy(refresh_every_ms=60_000)).add(TimeSample(0, 20, 10))
    assert state.needs_refresh(60_010) and not state.needs_refresh(60_009)
    aged = state.add(TimeSample(70_000, 70_400, 70_200))  # slower, but a new round
    assert aged.offset_ms == 300
    stale = state.invalidate()
    assert stale.needs_refresh(11) and stale.offset_ms == state.offset_ms
    fresh = stale.add(TimeSample(100, 1000, 160))
    assert fresh.offset_ms == 870 and not fresh.needs_refresh(200)
    with pytest.raises(ValueError, match="received before sent"):
        state.add(TimeSample(10, 0, 5))
