"""The multi-process deployment's compose profile and entry commands stay consistent with the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from shards.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SMC_CLI = Path(sys.executable).parent / "smc-quant"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_cluster_profile_validates() -> None:
    """`docker-compose --profile cluster config` accepts the file; shard and executor are in it."""
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "--profile", "cluster", "config"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"executor", "shard", "postgres", "redis", "migrate"} <= set(services)


def test_cluster_services_run_our_commands() -> None:
    """executor and shard run the real subcommands, need Redis, share the image, get a stop grace period."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    choices: Any = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    commands = set(choices)
    for name in ("executor", "shard"):
        svc = services[name]
        assert svc["command"] == [name] and name in commands
        assert svc["image"].startswith("smc-quant")
        assert "redis" in svc["depends_on"] and "migrate" in svc["depends_on"]
        assert "REDIS_URL" in svc["environment"] and "SHARD_COUNT" in svc["environment"]
        assert "ports" not in svc  # `--scale shard=N` must not collide on a host port
        assert int(str(svc["stop_grace_period"]).rstrip("s")) > 10


@pytest.mark.parametrize("role", ["shard", "executor"])
def test_cluster_commands_refuse_to_start_without_redis(role: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMC_", "REDIS_", "DATABASE_"))}
    done = subprocess.run([str(SMC_CLI), role], capture_output=True, text=True, timeout=60, check=False,
                          env={**env, "SMC_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"smc-quant: invalid setting REDIS_URL: `smc-quant {role}` needs Redis (multi-process mode)"]


async def test_single_process_service_heartbeat_report(shared_data: Path, pg_dsn: str) -> None:
    """`smc-quant run` (Redis optional) still starts as before and its heartbeat line reports every shard."""
    from structlog.testing import capture_logs

    from shards.app import Service
    from shards.supervisor import Heartbeat
    from smc_quant.exchange.emulator import Emulator, EmulatorConfig
    from tests.integration.cluster_kit import settings_for

    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=120, updates_per_candle=2, map_to_exchange_info=True,
                                  max_minutes=2, start_paused=True))
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await service.start()
        assert service.cluster is not None and service.governor is not None
        assert service.governor.shared is None  # no Redis configured: the local budget as before
        await service.cluster.wait_subscribed()
        emu.resume()
        await emu.wait_minutes(2)
        await service.cluster.wait_until(emu.start_ms + 60_000)
        with capture_logs() as logs:
            fields = Heartbeat(service.report, logger=service.log).beat()
        assert set(fields["shards"]) == {"0", "1", "frames_per_s"}
        assert fields["shards"]["frames_per_s"] > 0 and sum(fields["shards"][k]["frames"] for k in "01") > 0
        assert fields["open_positions"] == 0 and fields["model_version"] is None
        assert logs[0]["event"] == "heartbeat" and logs[0]["log_level"] == "warning"
    finally:
        await service.stop()
        await emu.stop()
