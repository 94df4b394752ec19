"""Dockerfile and docker-compose.yml stay consistent with the package (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from shards.cli import build_parser
from smc_quant.exchange.emulator.cli import parser as emulator_parser
from smc_quant.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SMC_CLI = Path(sys.executable).parent / "smc-quant"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str) -> str:
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_compose_file_validates() -> None:
    """`docker-compose config` accepts the file, with and without the offline profile."""
    for args in (["config", "-q"], ["--profile", "offline", "config", "-q"]):
        done = subprocess.run(["docker-compose", "-f", str(COMPOSE), *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=False)
        assert done.returncode == 0, done.stderr


def test_compose_commands_and_settings_are_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every smc-quant service runs a real subcommand with valid options and a valid environment."""
    services = _compose()["services"]
    ours = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("smc-quant")}
    assert {"migrate", "smc", "emulator", "smc-offline"} <= set(ours)
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name, svc in ours.items():
        command = svc["command"]
        assert command[0] in commands, name
        if command[0] == "emulator":
            emulator_parser().parse_args(command[1:])
        for key in list(os.environ):
            if key.startswith(("SMC_", "SHARD_", "DATABASE_", "REDIS_", "BINANCE_")):
                monkeypatch.delenv(key)
        for key, value in (svc.get("environment") or {}).items():
            if key != "SMC_DATA_DIR":
                monkeypatch.setenv(key, _interpolate(str(value)))
        settings = load_settings()
        assert settings.shard_count >= 1, name
        # the keys default to empty in compose: that is no key (paper), never a signed client refusing to start
        assert settings.binance_api_key is None and settings.binance_api_secret is None, name
        if command[0] in ("run", "demo", "executor", "shard"):  # long-running: a graceful stop, rotated logs
            assert int(str(svc["stop_grace_period"]).rstrip("s")) >= 20, name
            assert svc["logging"]["options"]["max-size"], name
    # the operator's mode and notification channels reach every service that runs the product; the keys only
    # those that place orders; the endpoint is published on this host only
    for name in ("smc", "executor", "shard"):
        env = services[name]["environment"]
        assert {"SMC_MODE", "SMC_NOTIFY__DISCORD_WEBHOOK_URL", "SMC_NOTIFY__TELEGRAM_TOKEN",
                "SMC_NOTIFY__TELEGRAM_CHAT_ID"} <= set(env), name
        assert env["SMC_MODE"] == "${SMC_MODE:-paper}", name
        assert ("BINANCE_API_KEY" in env) == (name in ("smc", "executor")), name
    assert not any(k.startswith("BINANCE_") for k in services["migrate"]["environment"])
    assert all(str(p).startswith("127.0.0.1:") for s in ours.values() for p in s.get("ports", []))
    # the offline demo keeps its own embedded database: replayed history never reaches the live one
    offline = ours["smc-offline"]
    assert offline["command"][0] == "demo" and "DATABASE_URL" not in offline["environment"]
    assert any(v.endswith(":/home/smc/.local/state/smc-quant") for v in offline["volumes"])


def test_compose_long_running_services_have_an_init_rotated_logs_and_a_true_healthcheck() -> None:
    """Every service that keeps running (ours, PostgreSQL, Redis) has an init as PID 1 (Python alone as PID 1 ignores
    SIGTERM while importing and never reaps the embedded PostgreSQL's orphans), rotated logs and a graceful stop;
    none inherits the image's HEALTHCHECK (`smc-quant check` on :8080/health) without serving that endpoint."""
    services = _compose()["services"]
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == {"migrate"}
    for name, svc in services.items():
        if name in one_shot:
            continue
        assert svc.get("init") is True, name
        assert svc["logging"]["driver"] == "json-file", name
        assert svc["logging"]["options"] == {"max-size": "20m", "max-file": "5"}, name
        assert int(str(svc["stop_grace_period"]).rstrip("s")) >= 20, name
    # the emulator serves the exchange's REST and WebSocket routes, not the service's /health: its check asks the
    # emulator's own ping route on the port its command serves
    emulator = services["emulator"]
    port = emulator["command"][emulator["command"].index("--port") + 1]
    test = emulator["healthcheck"]["test"]
    assert test[:3] == ["CMD", "smc-quant", "check"], test
    assert test[test.index("--url") + 1] == f"http://127.0.0.1:{port}/fapi/v1/ping"
    # the others that run the image serve /health on SMC_OPS__PORT (the image's check): the demo on --ops-port 8080
    for name, svc in services.items():
        if str(svc.get("image", "")).startswith("smc-quant") and name not in one_shot | {"emulator"}:
            assert "healthcheck" not in svc or svc["healthcheck"].get("disable") is not True, name
            assert str((svc.get("environment") or {}).get("SMC_OPS__PORT", "8080")) == "8080", name
            assert "--ops-port" not in svc["command"], name


def test_dockerfile_matches_package() -> None:
    """The image installs this package, runs the `smc-quant` script as non-root, health-checks with `check`."""
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["smc-quant"]' in text
    assert 'CMD ["smc-quant", "check"]' in text and "HEALTHCHECK" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / src).exists(), src
    assert "SMC_MIGRATIONS_DIR=/app/migrations" in text and "COPY migrations ./migrations" in text
    # the default report folders (report, backtest, train: reports/…) are writable by that user in WORKDIR /app
    user = re.findall(r"^USER (\w+)", text, re.M)[-1]
    assert "WORKDIR /app" in text and f"chown {user}:{user} /app/reports" in text
    assert 'smc-quant = "shards.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_wheel_install_and_entry_commands(tmp_path: Path, pg_dsn: str) -> None:
    """The Dockerfile's wheel build packages both packages; its entry commands run from a container-like layout."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("smc_quant-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("smc_quant/exchange/emulator/") for n in names)
    assert any(n.startswith("shards/cli.py") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "smc-quant = shards.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    app = tmp_path / "app"
    shutil.copytree(ROOT / "migrations", app / "migrations")
    env = {**os.environ, "DATABASE_URL": pg_dsn, "SMC_MIGRATIONS_DIR": str(app / "migrations"),
           "SMC_LOG_FORMAT": "json"}
    migrate = subprocess.run([str(SMC_CLI), "migrate"], capture_output=True, text=True, cwd=app, env=env,
                             timeout=120, check=False)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    assert "0001_candles.sql" in migrate.stdout
    report = subprocess.run([str(SMC_CLI), "report"], capture_output=True, text=True, cwd=app, env=env,
                            timeout=120, check=False)
    assert report.returncode == 0 and report.stdout.strip() == "account unbound: no closed trades", report.stderr
    for var, value, line in (
        ("SHARD_COUNT", "0", "smc-quant: invalid setting SHARD_COUNT: Input should be greater than 0"),
        ("DATABASE_URL", "postgres//nohost", "smc-quant: invalid setting DATABASE_URL: must be a "
                                             "postgresql://user@host:port/dbname URL"),
    ):
        bad = subprocess.run([str(SMC_CLI), "run"], capture_output=True, text=True, cwd=app,
                             env={**env, var: value}, timeout=60, check=False)
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines() == [line]


def test_emulator_console_command_serves(shared_data: Path) -> None:
    """`smc-quant emulator --data DIR --speed X` (the compose emulator's command) starts and prints its URLs; the
    compose emulator's healthcheck command reports it healthy."""
    proc = subprocess.Popen([str(SMC_CLI), "emulator", "--data", str(shared_data), "--speed", "60", "--port", "0",
                             "--log-level", "WARNING"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("emulator rest=http://127.0.0.1:") and "market=ws://127.0.0.1:" in line
        rest = line.split("rest=", 1)[1].split()[0]
        test = _compose()["services"]["emulator"]["healthcheck"]["test"]
        url = test[test.index("--url") + 1]
        check = [str(SMC_CLI), *test[2:test.index("--url") + 1], rest + urlsplit(url).path]
        done = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and done.stdout.startswith("healthy (200)"), done.stdout + done.stderr
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
