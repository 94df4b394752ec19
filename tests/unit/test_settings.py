"""Settings: user-facing names, nested prefix, one-line errors, secrets hidden."""

from __future__ import annotations

import pytest

from smc_quant.errors import ConfigError
from smc_quant.settings import load_settings


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT"),
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://host:notaport/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"SMC_FEED__STREAMS_PER_CONNECTION": "500"}, "SMC_FEED__STREAMS_PER_CONNECTION"),
        ({"SMC_LOG_LEVEL": "LOUD"}, "SMC_LOG_LEVEL"),
    ],
)
def test_bad_setting_names_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str) -> None:
    """An invalid value raises one line naming the variable."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert name in message and "\n" not in message


def test_names_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    """User-facing names and nested SMC_ sections are read; the result is frozen."""
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SMC_FEED__HEARTBEAT_TIMEOUT_S", "5")
    monkeypatch.setenv("SMC_UNIVERSE__QUOTE_ASSETS", '["USDT","USDC"]')
    s = load_settings()
    assert (s.shard_count, s.feed.heartbeat_timeout_s, s.universe.quote_assets) == (4, 5.0, ("USDT", "USDC"))
    with pytest.raises(Exception, match="frozen"):
        s.shard_count = 3  # type: ignore[misc]


def test_secrets_never_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API secret is not in the settings' repr or str."""
    monkeypatch.setenv("BINANCE_API_SECRET", "topsecretvalue")
    monkeypatch.setenv("BINANCE_API_KEY", "keyvalue123")
    s = load_settings()
    assert "topsecretvalue" not in repr(s) and "keyvalue123" not in str(s)
    assert s.binance_api_secret is not None and s.binance_api_secret.get_secret_value() == "topsecretvalue"


def test_blank_keys_and_tokens_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``BINANCE_API_KEY=`` (what compose passes when the variable is unset) is no key: the stack trades on paper
    instead of building a signed client that refuses to start (the default `docker compose up` crash-looped)."""
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "SMC_NOTIFY__TELEGRAM_TOKEN",
                 "SMC_NOTIFY__DISCORD_WEBHOOK_URL"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("SMC_NOTIFY__TELEGRAM_CHAT_ID", "  ")
    s = load_settings()
    assert (s.binance_api_key, s.binance_api_secret) == (None, None)
    assert (s.notify.telegram_token, s.notify.discord_webhook_url, s.notify.telegram_chat_id) == (None, None, None)
    monkeypatch.setenv("BINANCE_API_KEY", "k1")
    assert load_settings().binance_api_key is not None


def test_database_and_redis_passwords_never_render(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://smc:pgpass42@db:5432/smc")
    monkeypatch.setenv("REDIS_URL", "redis://:redispass42@cache:6379/0")
    s = load_settings()
    text = repr(s) + str(s)
    assert "pgpass42" not in text and "redispass42" not in text
    assert "postgresql://smc:***@db:5432/smc" in text and "redis://:***@cache:6379/0" in text
    assert s.database_url == "postgresql://smc:pgpass42@db:5432/smc"  # the value itself is whole
    monkeypatch.setenv("DATABASE_URL", "postgresql://smc@db:5432/smc?sslmode=require&password=pgpass43")
    text = repr(load_settings())
    assert "pgpass43" not in text and "postgresql://smc@db:5432/smc?sslmode=require&password=***" in text


def test_env_example_documents_every_setting() -> None:
    """config/.env.example is exactly what the settings model declares (regenerate when this fails)."""
    from pathlib import Path

    from smc_quant.settings import render_env_example, settings_reference

    text = (Path(__file__).resolve().parents[2] / "config" / ".env.example").read_text()
    assert text == render_env_example()
    assert all(doc for _, _, doc in settings_reference())
    # a setting documented over several source lines is still one comment line: the file can be copied to .env
    assert [line for line in text.splitlines() if line and not line.startswith("# ")] == []


def test_readme_settings_table_matches_the_settings_model() -> None:
    """README's table has one row per setting, with its default and description as declared (rst ``code``
    shown as Markdown `code`, an empty default as an empty cell): edit both together."""
    from pathlib import Path

    from smc_quant.settings import settings_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split(" | ")[0][3:-1]: line for line in readme.splitlines() if line.startswith("| `")}
    for env, default, doc in settings_reference():
        cell = f"`{default}`" if default else ""
        assert rows.get(env) == f"| `{env}` | {cell} | {doc.replace('``', '`')} |", env


@pytest.mark.parametrize(("env", "named", "hint"), [
    ({"SMC_TRADING_MAX_LEVERAGE": "3"}, "SMC_TRADING_MAX_LEVERAGE", "SMC_TRADING__MAX_LEVERAGE"),  # one _ for __
    ({"SMC_RISK__MAX_LEVERAGE": "2"}, "SMC_RISK__MAX_LEVERAGE", "SMC_TRADING__MAX_LEVERAGE"),  # no such section
    ({"SMC_MODEE": "live"}, "SMC_MODEE", "SMC_MODE"),
    ({"smc_log_levle": "INFO"}, "smc_log_levle", "SMC_LOG_LEVEL"),  # names are read case-insensitively
    ({"SMC_SOMETHING_ELSE": "1"}, "SMC_SOMETHING_ELSE", None),
])
def test_an_smc_variable_that_names_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                         named: str, hint: str | None) -> None:
    """A misspelt name would leave its setting (a risk limit, the mode) at the default without a word."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="unknown setting") as err:
        load_settings()
    assert named in str(err.value) and "\n" not in str(err.value)
    assert (f"did you mean {hint}?" in str(err.value)) if hint else "did you mean" not in str(err.value)


def test_variables_read_elsewhere_and_whole_sections_are_not_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"SMC_DATA_DIR": "/x", "SMC_MIGRATIONS_DIR": "/y", "SMC_EMULATOR_API_SECRET": "s",
                       "SMC_TEST_REDIS_URL": "redis://x", "SMC_CREDIT": "0", "SMC_SHARD_COUNT": "2",
                       "SMC_TRADING": '{"max_leverage": 4}', "SMC_OPS__PORT": "9000"}.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert (s.shard_count, s.trading.max_leverage, s.ops.port) == (2, 4, 9000)


def test_replay_with_keys_never_signs_for_a_binance_host() -> None:
    """Replay is for the emulator: with keys and the default (mainnet) REST URL it would place real orders."""
    keys = {"binance_api_key": "k", "binance_api_secret": "s"}
    with pytest.raises(ConfigError, match="replay with API keys would send signed orders to Binance") as err:
        load_settings(mode="replay", **keys)
    assert "SMC_VENUE__REST_BASE" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="SMC_VENUE__WS_PRIVATE_BASE"):
        load_settings(mode="replay", venue={"rest_base": "http://127.0.0.1:9"}, **keys)
    emulator = {"rest_base": "http://127.0.0.1:9", "ws_private_base": "ws://127.0.0.1:9/private"}
    assert load_settings(mode="replay", venue=emulator, **keys).mode == "replay"
    assert load_settings(mode="replay").mode == "replay"  # no keys: paper on public data
    assert load_settings(mode="live", **keys).venue.rest_base == "https://fapi.binance.com"


def test_limit_entries_need_an_exchange() -> None:
    """The paper account sees one price per closed minute: a LIMIT entry would rest unfilled through the order
    manager's 10 s wait and be cancelled, every time — paper trading with LIMIT entries made no trades, silently."""
    with pytest.raises(ConfigError, match="ENTRY_TYPE=LIMIT needs an exchange") as err:
        load_settings(mode="paper", trading={"entry_type": "LIMIT"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="ENTRY_TYPE=LIMIT needs an exchange"):
        load_settings(mode="replay", trading={"entry_type": "LIMIT"})  # no keys: the paper account again
    keys = {"binance_api_key": "k", "binance_api_secret": "s"}
    assert load_settings(mode="live", trading={"entry_type": "LIMIT"}, **keys).trading.entry_type == "LIMIT"


def test_venue_urls_never_mix_mainnet_and_testnet() -> None:
    with pytest.raises(ConfigError, match="mix Binance mainnet and testnet") as err:
        load_settings(venue={"ws_market_base": "wss://fstream.binancefuture.com/market"})
    assert "SMC_VENUE__WS_MARKET_BASE (testnet)" in str(err.value) and "WS_API" not in str(err.value)
    # README's demo environment: REST on demo-fapi.binance.com, streams on fstream.binancefuture.com
    demo = {"rest_base": "https://demo-fapi.binance.com", "ws_market_base": "wss://fstream.binancefuture.com/market",
            "ws_public_base": "wss://fstream.binancefuture.com/public",
            "ws_private_base": "wss://fstream.binancefuture.com/private",
            "ws_api_base": "wss://testnet.binancefuture.com/ws-fapi/v1"}
    assert load_settings(venue=demo).venue.rest_base == "https://demo-fapi.binance.com"
    # a testnet set up from the earlier README (no WS API URL: that setting is not used yet) still starts
    assert load_settings(venue={k: v for k, v in demo.items() if k != "ws_api_base"}).venue
    testnet = {"rest_base": "https://demo-fapi.binancefuture.com", "ws_public_base": "wss://x.binancefuture.com/public",
               "ws_market_base": "wss://x.binancefuture.com/market", "ws_private_base": "wss://x.binancefuture.com/p",
               "ws_api_base": "wss://x.binancefuture.com/ws-fapi/v1"}
    assert load_settings(venue=testnet).venue.rest_base.endswith("binancefuture.com")
    # a host that only ends in the name is not Binance's
    assert load_settings(venue={"ws_market_base": "wss://notbinancefuture.com/market"}).venue


def test_telegram_needs_its_token_and_its_chat_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """One without the other used to switch the channel off without a word."""
    monkeypatch.setenv("SMC_NOTIFY__TELEGRAM_TOKEN", "123:abc")
    with pytest.raises(ConfigError, match="SMC_NOTIFY: telegram_token is set but telegram_chat_id is not") as err:
        load_settings()
    assert "123:abc" not in str(err.value)
    monkeypatch.setenv("SMC_NOTIFY__TELEGRAM_CHAT_ID", "42")
    assert load_settings().notify.telegram_chat_id == "42"
    monkeypatch.setenv("SMC_NOTIFY__TELEGRAM_TOKEN", "")
    with pytest.raises(ConfigError, match="telegram_chat_id is set but telegram_token is not"):
        load_settings()


@pytest.mark.parametrize(("env", "named"), [
    ({"SMC_NOTIFY": '{"telegram_token": "tok3n-s3cret'}, "SMC_NOTIFY"),  # a whole section as JSON, unterminated
    ({"smc_trading": "{max_leverage: 4, 'tok3n-s3cret'}"}, "smc_trading"),  # names are read case-insensitively
    ({"SMC_UNIVERSE__QUOTE_ASSETS": '["USDT", "tok3n-s3cret"', "SMC_UNIVERSE__MAX_SYMBOLS": "tok3n-s3cret"},
     "SMC_UNIVERSE__QUOTE_ASSETS"),  # a list setting; a plain string beside it is not JSON and not the culprit
    ({"SMC_UNIVERSE__SYMBOLS": "BTCUSDT,ETHUSDT"}, "SMC_UNIVERSE__SYMBOLS"),  # a list is written as JSON
])
def test_a_malformed_json_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                              named: str) -> None:
    """Broken JSON in a section (or list) variable is one line naming the variable — not a traceback, and never
    the value, which may hold a token."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"invalid setting {named}: not valid JSON") and "\n" not in message, message
    assert "tok3n-s3cret" not in message


def test_masked_url_hides_every_password_parameter() -> None:
    """libpq reads ``sslpassword=`` (the client key's passphrase) as well as ``password=``: neither is shown."""
    from smc_quant.settings import masked_url

    url = ("postgresql://smc:pw1@db:5432/smc?sslmode=verify-full&SSLPassword=pw2&sslkey=/k&password=pw3"
           "&passwordless=kept&keypassword=pw4")
    assert masked_url(url) == ("postgresql://smc:***@db:5432/smc?sslmode=verify-full&SSLPassword=***&sslkey=/k"
                               "&password=***&passwordless=kept&keypassword=***")
    assert masked_url("postgresql://db/smc?sslpassword=pw2") == "postgresql://db/smc?sslpassword=***"
    assert masked_url("postgresql://smc@db/smc") == "postgresql://smc@db/smc"


def test_the_learner_labels_rows_with_the_history_the_live_engine_warms_up_on() -> None:
    """Training rows with less history than the live warm-up have features the live engine does not produce
    (``build_dataset``'s ``min_history``): the two defaults move together."""
    settings = load_settings()
    assert settings.learner.min_history_candles == settings.feed.warm_start_candles > 0
