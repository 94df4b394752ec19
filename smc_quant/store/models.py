"""``ModelRegistry``: the SQL of the ``models`` table (migration 0003).

Status moves candidate → champion → retired. ``promote`` and ``rollback`` run in one transaction under
an advisory lock, so there is exactly one champion after each (a partial unique index backs this up).
``rollback`` retires the champion and reinstates the most recently promoted earlier champion that was
not itself rolled back, so repeated rollbacks walk back through the promotion history (as far as
``prune_retired`` kept it: the housekeeper keeps the 20 most recent promotions by default).

Loading a model (``load``, ``load_champion``) and promoting one refuse a feature-schema version other
than the engine's ``FEATURE_SCHEMA.version`` with ``FeatureSchemaMismatch``. Metrics and parameters are
stored as jsonb; non-finite floats (NaN, inf) are stored as null.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from smc_quant.errors import OperationalError
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model.trainer import TrainedModel, check_schema

LOCK_KEY = 0x534D_4351_4D4F_44  # "SMCQMOD": serialises promote / rollback across the cluster
_RECORD = ("version, status, feature_schema, train_start, train_end, params::text AS params, "
           "metrics::text AS metrics, created_at, promoted_at, retired_at, rolled_back_at")

_INSERT = f"""
INSERT INTO models (feature_schema, train_start, train_end, params, metrics, artifact)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) RETURNING {_RECORD}"""
_GET = f"SELECT {_RECORD} FROM models WHERE version = $1"
_CHAMPION = f"SELECT {_RECORD} FROM models WHERE status = 'champion'"
_CHAMPION_VERSION = "SELECT version, feature_schema FROM models WHERE status = 'champion'"
_LIST = f"SELECT {_RECORD} FROM models ORDER BY version"
_ARTIFACT = "SELECT feature_schema, artifact FROM models WHERE version = $1"
_RETIRE = """
UPDATE models SET status = 'retired', retired_at = now(), rolled_back_at = CASE WHEN $1 THEN now() END
WHERE status = 'champion'"""
_CROWN = f"""
UPDATE models SET status = 'champion', promoted_at = now(), retired_at = NULL, rolled_back_at = NULL
WHERE version = $1 RETURNING {_RECORD}"""
_PREVIOUS = """
SELECT version FROM models
WHERE status = 'retired' AND promoted_at IS NOT NULL AND rolled_back_at IS NULL AND feature_schema = $1
ORDER BY promoted_at DESC, version DESC LIMIT 1"""
# Candidates never promoted, older than the newest ``$1`` of them (champions and retired champions stay:
# they are the rollback chain). ``min`` over no rows is NULL, and ``version < NULL`` deletes nothing.
_PRUNE = """
DELETE FROM models WHERE status = 'candidate' AND promoted_at IS NULL AND version < (
    SELECT min(version) FROM (
        SELECT version FROM models WHERE status = 'candidate' AND promoted_at IS NULL
        ORDER BY version DESC LIMIT $1
    ) AS newest
)"""

# Retired champions beyond the ``$1`` most recently promoted of them (a rollback walks back from the newest).
_PRUNE_RETIRED = """
DELETE FROM models WHERE status = 'retired' AND version NOT IN (
    SELECT version FROM models WHERE status = 'retired'
    ORDER BY promoted_at DESC NULLS LAST, version DESC LIMIT $1
)"""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One registry row without its artifact; training window in epoch ms."""

    version: int
    status: str
    feature_schema: str
    train_start: int
    train_end: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None
    rolled_back_at: datetime | None


def _record(row: asyncpg.Record) -> ModelRecord:
    return ModelRecord(row["version"], row["status"], row["feature_schema"], row["train_start"],
                       row["train_end"], orjson.loads(row["params"]), orjson.loads(row["metrics"]),
                       row["created_at"], row["promoted_at"], row["retired_at"], row["rolled_back_at"])


def _json(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class ModelRegistry:
    """Stores trained models and decides which one is the champion."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register(self, model: TrainedModel, *, train_start: int, train_end: int,
                       params: Mapping[str, Any], metrics: Mapping[str, Any]) -> ModelRecord:
        """Store ``model`` as a new candidate and return its row (with the new ``version``)."""
        row = await self._pool.fetchrow(_INSERT, model.feature_schema, train_start, train_end, _json(params),
                                        _json(metrics), model.to_string().encode())
        return _record(row)

    async def get(self, version: int) -> ModelRecord | None:
        """The row of ``version``, or ``None``."""
        row = await self._pool.fetchrow(_GET, version)
        return None if row is None else _record(row)

    async def champion(self) -> ModelRecord | None:
        """The current champion's row, or ``None`` when no model was ever promoted."""
        row = await self._pool.fetchrow(_CHAMPION)
        return None if row is None else _record(row)

    async def champion_version(self) -> tuple[int, str] | None:
        """The champion's ``(version, feature_schema)``, or ``None``: what a process following the champion asks
        every minute, without the row's params and metrics (the learner's held-out window, ~1.6 MB to decode)."""
        row = await self._pool.fetchrow(_CHAMPION_VERSION)
        return None if row is None else (row["version"], row["feature_schema"])

    async def usable_champion(self) -> ModelRecord | None:
        """The champion's row if the running engine can score with it (its feature schema is the current one);
        ``None`` otherwise — after a schema change the old champion counts as none: the learner's cold start
        and ``promote`` then go on as without one."""
        record = await self.champion()
        return record if record is not None and record.feature_schema == FEATURE_SCHEMA.version else None

    async def load(self, version: int) -> TrainedModel:
        """The model of ``version``; ``FeatureSchemaMismatch`` when its schema is not the engine's, ``UnusableModel``
        when its artifact does not load."""
        row = await self._pool.fetchrow(_ARTIFACT, version)
        if row is None:
            raise OperationalError(f"no model version {version} in the registry")
        return TrainedModel.from_string(bytes(row["artifact"]).decode(errors="replace"), row["feature_schema"])

    async def load_champion(self) -> TrainedModel | None:
        """The champion model, or ``None`` ("no model, not trading" — never a random one)."""
        record = await self.champion()
        return None if record is None else await self.load(record.version)

    async def promote(self, version: int) -> ModelRecord:
        """Make ``version`` the champion and retire the previous one, in one transaction."""
        record = await self._promote(version, None, check=False)
        assert record is not None
        return record

    async def promote_over(self, version: int, champion: int | None) -> ModelRecord | None:
        """:meth:`promote` only if the champion is still ``champion`` (``None``: there is still none) — the one the
        decision to promote was made against; ``None``, nothing changed, when another promotion or a rollback came
        in between (an operator's ``rollback`` during a learner round used to be overwritten at its end by a model
        never compared with the champion the operator chose)."""
        return await self._promote(version, champion, check=True)

    async def _promote(self, version: int, expected: int | None, *, check: bool) -> ModelRecord | None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            if check:
                current = await conn.fetchrow(_CHAMPION)
                if (None if current is None else current["version"]) != expected:
                    return None
            row = await conn.fetchrow(_GET, version)
            if row is None:
                raise OperationalError(f"no model version {version} in the registry")
            check_schema(row["feature_schema"])
            if row["status"] == "champion":
                return _record(row)
            await conn.execute(_RETIRE, False)
            return _record(await conn.fetchrow(_CROWN, version))

    async def rollback(self) -> ModelRecord:
        """Retire the champion and reinstate the previous one; returns the new champion."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            if await conn.fetchrow(_CHAMPION) is None:
                raise OperationalError("no champion to roll back")
            await conn.execute(_RETIRE, True)
            previous = await conn.fetchval(_PREVIOUS, FEATURE_SCHEMA.version)
            if previous is None:  # (one of another feature schema could not score: never reinstated)
                raise OperationalError(
                    f"no earlier champion on feature schema {FEATURE_SCHEMA.version} to roll back to")
            return _record(await conn.fetchrow(_CROWN, previous))

    async def prune(self, keep_candidates: int) -> int:
        """Delete the candidates that were never promoted, except the newest ``keep_candidates`` (≥ 1); how
        many were deleted. Under the promotion lock: a candidate being promoted is not deleted under it."""
        if keep_candidates < 1:
            raise ValueError("keep_candidates must be >= 1")
        return await self._delete_locked(_PRUNE, keep_candidates)

    async def prune_retired(self, keep: int) -> int:
        """Delete the retired champions except the ``keep`` (≥ 1) most recently promoted; how many were deleted.
        A learner that promotes every day would otherwise keep every model it ever crowned. Rollback walks
        back through what is kept; the champion and the candidates are not touched."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        return await self._delete_locked(_PRUNE_RETIRED, keep)

    async def _delete_locked(self, statement: str, keep: int) -> int:
        """Run a pruning ``DELETE`` under the promotion lock (a model being promoted is not deleted under it);
        how many rows it deleted."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            status = await conn.execute(statement, keep)
        return int(status.rsplit(" ", 1)[1])

    async def newest_created_ms(self) -> int | None:
        """When the newest model was registered (epoch ms), ``None`` with none — without reading every row's
        metrics, which hold a held-out window each."""
        created: datetime | None = await self._pool.fetchval("SELECT max(created_at) FROM models")
        return None if created is None else int(created.timestamp() * 1000)

    async def list(self) -> builtins.list[ModelRecord]:
        """Every row, oldest first (artifacts left out)."""
        return [_record(r) for r in await self._pool.fetch(_LIST)]
