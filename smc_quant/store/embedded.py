"""An embedded PostgreSQL (the ``pgserver`` wheel) for running without ``DATABASE_URL``.

The server keeps its data under ``<state_dir>/pg`` and listens on a unix socket only; the DSN it
hands out (``postgresql://postgres:@/postgres?host=<socket dir>``) is one asyncpg accepts. pgserver
is blocking, so every call into it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smc_quant.errors import OperationalError

if TYPE_CHECKING:
    from smc_quant.settings import Settings

DATABASE = "postgres"


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI)
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _stderr_of(exc: BaseException) -> str:
    """The tail of a failed command's stderr (``initdb``/``pg_ctl`` say why there), if the error carries it."""
    err = getattr(exc, "stderr", None)
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return f" ({err.strip()[-500:]})" if isinstance(err, str) and err.strip() else ""


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process; :meth:`stop` shuts it down (the data stays)."""

    retry_delay_s = 1.0

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self._server: Any = None

    @property
    def dsn(self) -> str:
        """The connection URI; only valid after :meth:`start`."""
        if self._server is None:
            raise OperationalError("embedded PostgreSQL is not running")
        uri: str = self._server.get_uri(DATABASE)
        return uri

    async def start(self) -> str:
        """Initialise the data directory if needed, start the server and return its DSN."""
        if self._server is None:
            pgserver = _import_pgserver()
            self._server = await asyncio.to_thread(self._start_blocking, pgserver)
        return self.dsn

    def _start_blocking(self, pgserver: Any) -> Any:
        """Start (initialising on first use); a first failure is retried once after ``retry_delay_s``.

        A fresh data directory's ``initdb`` was seen failing once in CI right after a heavy test (the folder
        left empty, cause not reproduced since); a second attempt costs nothing when the first succeeds.
        Both errors are reported when the retry fails too.
        """
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        for attempt in (1, 2):
            try:
                return pgserver.get_server(self.datadir, cleanup_mode="stop")
            except Exception as exc:  # pgserver raises subprocess/OS errors of many kinds
                errors.append(f"{type(exc).__name__}: {exc}{_stderr_of(exc)}")
                if attempt == 1:
                    time.sleep(self.retry_delay_s)
        raise OperationalError(f"embedded PostgreSQL failed to start in {self.datadir}: " + " | then: ".join(errors))

    async def stop(self) -> None:
        """Stop the server if this process started it; the data directory is kept."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)


async def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """``DATABASE_URL`` when set; otherwise start an embedded server under ``state_dir/pg``."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.state_dir / "pg")
    return await embedded.start(), embedded
