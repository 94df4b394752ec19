"""``smc-quant check`` is Docker's HEALTHCHECK (every 30 s, 5 s timeout): it must stay a small HTTP probe, never
load the model and numeric stack that the other commands need."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shards.cli import build_parser, main
from smc_quant.labels import SETUP_SOURCES

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "numba", "lightgbm", "polars", "shards.app", "smc_quant.labels")

PROBE = ("import json, sys\n"
         "from shards.cli import main\n"
         "code = main(sys.argv[1:])\n"
         f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
         "print(json.dumps({'code': code, 'heavy': heavy}))\n")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no one else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _probe(args: list[str], **env: str) -> tuple[dict[str, object], str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.upper().startswith(("SMC_", "SHARD_", "DATABASE_", "REDIS_", "BINANCE_"))}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env}, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


def test_check_loads_no_heavy_module_and_fails_on_an_unreachable_url(closed_port: int) -> None:
    """The image's HEALTHCHECK (`smc-quant check`, the URL from SMC_OPS__HOST/PORT) and `check --url` answer 1 for a
    port that refuses, without importing numpy, numba, lightgbm, polars or the service."""
    result, out = _probe(["check"], SMC_OPS__HOST="0.0.0.0", SMC_OPS__PORT=str(closed_port))
    assert result == {"code": 1, "heavy": []}, out
    assert f"unreachable: http://127.0.0.1:{closed_port}/health" in out
    result, out = _probe(["check", "--url", f"http://127.0.0.1:{closed_port}/health", "--timeout", "2"])
    assert result == {"code": 1, "heavy": []}, out


def test_check_with_a_malformed_section_variable_is_one_line_exit_2() -> None:
    """A section given as broken JSON is a configuration error like any other: exit 2, one line naming the
    variable, never its value (it may hold a token)."""
    result, out = _probe(["check"], SMC_NOTIFY='{"telegram_token": "tok3n-s3cret')
    assert result["code"] == 2, out
    lines = [ln for ln in out.splitlines() if ln.startswith("smc-quant:")]
    assert len(lines) == 1 and "SMC_NOTIFY" in lines[0], out
    assert "tok3n-s3cret" not in out and "Traceback" not in out


def test_train_setups_are_checked_when_train_is_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    """`--setups` accepts exactly the label sources (checked lazily: only `train` loads the labels module)."""
    parser = build_parser()
    for source in SETUP_SOURCES:
        assert parser.parse_args(["train", "--data", "d", "--setups", source]).setups == source
    assert parser.parse_args(["train", "--data", "d"]).setups == "broad"
    train = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    assert "{" + ",".join(SETUP_SOURCES) + "}" in train.format_help()  # the usage names them all
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "d", "--setups", "everything"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--setups" in err and "'everything'" in err and all(s in err for s in SETUP_SOURCES)
