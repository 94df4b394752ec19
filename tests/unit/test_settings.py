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
