"""An embedded PostgreSQL (the ``pgserver`` wheel) for running without ``DATABASE_URL``.

The server keeps its data under ``<state_dir>/pg`` and listens on a unix socket only; the DSN it
hands out (``postgresql://postgres:@/postgres?host=<socket dir>``) is one asyncpg accepts. pgserver
is blocking, so every call into it runs in a worker thread.

PostgreSQL refuses to run as root. pgserver then runs it as the system account ``pgserver``, and
creates that account with a bare ``useradd`` looked up on ``PATH``, which a minimal ``PATH`` such as
``/usr/bin:/bin`` (cron, systemd units, a scrubbed environment) does not reach. On a fresh machine
that made the demo die at start. :func:`ensure_system_user` creates the account first, with
``useradd`` looked up on ``PATH`` and in the sbin directories.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smc_quant.errors import OperationalError

if TYPE_CHECKING:
    from smc_quant.settings import Settings

DATABASE = "postgres"
SYSTEM_USER = "pgserver"
"""The account pgserver runs PostgreSQL under when this process is root (its own fixed name)."""
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
STOP_WAIT_S = 5
"""Longest wait for the embedded server to stop before it is killed."""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def ensure_system_user(name: str = SYSTEM_USER, extra_path: tuple[str, ...] = SBIN_DIRS) -> None:
    """As root, make sure the system account ``name`` exists (``useradd -s /bin/bash name``).

    ``useradd`` is looked up on ``PATH`` and then in ``extra_path``. Not root, or the account exists:
    nothing to do. A concurrent creation by another process counts as success.
    """
    if os.geteuid() != 0 or _user_exists(name):
        return
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), *extra_path) if p)
    useradd = shutil.which("useradd", path=search)
    if useradd is None:
        raise OperationalError(
            f"embedded PostgreSQL cannot run as root without the system account {name!r}, and useradd is "
            f"not on PATH or in {', '.join(extra_path) or 'no other directory'}: create the account "
            f"(useradd -s /bin/bash {name}), run as a non-root user, or set DATABASE_URL")
    proc = subprocess.run([useradd, "-s", "/bin/bash", name], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and not _user_exists(name):
        raise OperationalError(
            f"embedded PostgreSQL: creating the system account {name!r} failed "
            f"(useradd exit {proc.returncode}: {proc.stderr.strip()[-300:]})")


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
        """Start (initialising the data directory on first use); a failure carries the tail of
        ``initdb``/``pg_ctl``'s stderr."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        ensure_system_user()
        try:
            return pgserver.get_server(self.datadir, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises subprocess/OS errors of many kinds
            raise OperationalError(f"embedded PostgreSQL failed to start in {self.datadir}: "
                                   f"{type(exc).__name__}: {exc}{_stderr_of(exc)}") from exc

    async def stop(self) -> None:
        """Stop the server if this process started it; the data directory is kept.

        pgserver stops it with ``pg_ctl -w stop``, which waits up to ``PGCTLTIMEOUT`` (60 s unless set)
        before pgserver kills the server; a hung server would hold the process that long past its stop
        budget, so the wait is cut to ``STOP_WAIT_S`` unless the environment sets its own."""
        server, self._server = self._server, None
        if server is not None:
            os.environ.setdefault("PGCTLTIMEOUT", str(STOP_WAIT_S))
            await asyncio.to_thread(server.cleanup)


async def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """``DATABASE_URL`` when set; otherwise start an embedded server under ``state_dir/pg``."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.state_dir / "pg")
    return await embedded.start(), embedded
