"""structlog set-up: JSON lines when stderr is not a TTY, a readable console otherwise.

Components take a bound logger (``log.bind(shard=3)``) from their caller; nothing here keeps global
state beyond structlog's own configuration, which :func:`configure_logging` sets once at start.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog

SECRET_KEYS = frozenset({"api_key", "api_secret", "secret", "password", "signature", "listen_key"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a secret-looking field reach the output."""
    for key in SECRET_KEYS.intersection(event):
        event[key] = "**redacted**"
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at write time (not the object it was when logging was set up),
    so replacing stderr later (a test's capture, a supervisor redirect) never leaves loggers writing to a
    closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR = _CurrentStderr()


def configure_logging(level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog (and stdlib logging for third-party libraries) once at start."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelName(level)
    logging.basicConfig(level=numeric, stream=STDERR, format="%(name)s %(levelname)s %(message)s")
    for noisy in ("pgserver", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(**context: Any) -> structlog.stdlib.BoundLogger:
    """A logger with ``context`` bound (``shard=…``, ``symbol=…``)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(**context)
    return logger
