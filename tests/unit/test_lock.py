"""requirements.lock pins the runtime closure, satisfies pyproject, and is what image, CI and README install."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-!]+)", line)
        assert m, f"not an exact pin: {line!r}"
        name = canonicalize_name(m[1])
        assert name not in pins, f"pinned twice: {name}"
        pins[name] = m[2]
    return pins


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def test_every_runtime_dependency_is_pinned_within_pyproject_bounds() -> None:
    pins = _locked()
    for req in _runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"


def test_lock_is_closed_under_the_pinned_packages_requirements() -> None:
    """Every package a pinned package needs (no extras, markers of this platform) is pinned too, so an install
    with the lock as constraints cannot pull an unpinned version."""
    pins = _locked()
    missing = []
    for name in pins:
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in pins:
                missing.append(f"{name} → {req}")
    assert not missing, missing


def test_this_environment_runs_the_locked_versions() -> None:
    """The tests run against exactly what ships (.ci/run installs with the lock as constraints)."""
    drift = {name: (want, metadata.version(name)) for name, want in _locked().items()
             if metadata.version(name) != want}
    assert not drift, f"installed versions differ from requirements.lock (want, have): {drift}"


def test_image_ci_and_readme_install_with_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in re.search(r"^COPY pyproject\.toml .*$", dockerfile, re.M)[0]  # type: ignore[index]
    assert re.search(r"pip wheel .*-c requirements\.lock", dockerfile)
    assert re.search(r"pip install .*--no-index /wheels/", dockerfile), "the final stage installs only built wheels"
    assert all(re.fullmatch(r"python:\d+\.\d+-slim-\w+( AS \w+)?", f) for f in re.findall(r"^FROM (.+)$", dockerfile,
                                                                                              re.M))
    assert "-c requirements.lock" in (ROOT / ".ci" / "run").read_text()
    assert "pip install -c requirements.lock -e '.[dev]'" in (ROOT / "README.md").read_text()
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text()
