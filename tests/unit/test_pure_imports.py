"""The SMC detectors and the feature code are pure: they import no I/O library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import smc_quant

FORBIDDEN = ("asyncio", "aiohttp", "asyncpg", "redis", "websockets", "socket", "ssl", "http", "urllib.request",
             "requests", "structlog", "uvloop", "pgserver", "subprocess")
PURE = [Path(smc_quant.__file__).parent / "features.py",
        *sorted((Path(smc_quant.__file__).parent / "smc").glob("*.py")),
        *sorted((Path(smc_quant.__file__).parent / "domain").glob("*.py")),
        Path(smc_quant.__file__).parent / "labels.py",
        Path(smc_quant.__file__).parent / "strategy.py",
        Path(smc_quant.__file__).parent / "risk.py",
        Path(smc_quant.__file__).parent / "correlation.py",
        Path(smc_quant.__file__).parent / "funding.py",
        Path(smc_quant.__file__).parent / "book.py",
        *sorted((Path(smc_quant.__file__).parent / "orders").glob("*.py"))]


def _imported_roots(path: Path) -> set[str]:
    """Every imported module of ``path`` with its parents (``urllib.parse`` gives urllib and urllib.parse)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 2)}


def test_pure_modules_import_no_io_library_directly() -> None:
    """No module of smc_quant.smc or smc_quant.features names an I/O library in its imports."""
    offenders = {p.name: sorted(_imported_roots(p) & set(FORBIDDEN)) for p in PURE}
    assert len(PURE) > 10
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_pure_modules_loads_no_io_library_beyond_numpy_numba_polars() -> None:
    """Importing the pure modules adds no I/O module to what numpy, numba and polars already load."""
    code = (
        "import sys, numpy, numba, polars\n"
        "before = set(sys.modules)\n"
        "import smc_quant.smc, smc_quant.features, smc_quant.domain.candle_store, smc_quant.domain.continuity\n"
        "import smc_quant.labels, smc_quant.orders.filters, smc_quant.orders.signing, smc_quant.orders.reactions\n"
        "import smc_quant.strategy, smc_quant.risk, smc_quant.book, smc_quant.correlation, smc_quant.funding\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = {m.split(".")[0] for m in out.stdout.split()}
    assert "smc_quant" in added
    assert added & set(FORBIDDEN) == set()
    assert "smc_quant.datasets" not in out.stdout.split()


def test_the_library_never_imports_the_service() -> None:
    """``shards`` imports ``smc_quant``, never the reverse (the backtest, the executor and every adapter live in
    the library; the service composes them)."""
    root = Path(smc_quant.__file__).parent
    offenders = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "shards" in _imported_roots(p))
    assert offenders == []
