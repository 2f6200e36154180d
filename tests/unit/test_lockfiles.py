"""The lockfiles install what pyproject.toml asks for, and both sets agree on what they share.

deploy/local/install.sh installs requirements.lock (run.sh) or requirements-dev.lock (test.sh)
with --no-deps: a dependency added to pyproject.toml without `bash deploy/local/lock.sh` would
be missing from the environment, and two locks resolved apart could give the platform other
versions under test than in the demo.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ \\]+)")


def _pins(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"requirements.lock": [Requirement(r) for r in project["dependencies"]],
            "requirements-dev.lock": [Requirement(r) for r in (
                project["dependencies"] + project["optional-dependencies"]["dev"])]}


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_declared_dependency_is_pinned_within_its_range(lock: str) -> None:
    pins = _pins(lock)
    for requirement in _declared()[lock]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock}: run bash deploy/local/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}:"
            " run bash deploy/local/lock.sh")


def test_every_pin_has_a_hash() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text)
        for block in blocks[1:]:
            assert "--hash=sha256:" in block, f"{lock}: no hash for {block.splitlines()[0]}"


def test_the_runtime_set_has_the_dev_sets_versions() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert runtime, "requirements.lock pins nothing"
    assert {name: dev.get(name) for name in runtime} == runtime
