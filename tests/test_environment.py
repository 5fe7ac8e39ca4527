"""The set-up a newcomer runs: README's two commands, .ci/run, the lock (constraints.txt) and environment.yml."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    """constraints.txt as {normalised name: exact version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: expected NAME==VERSION, got {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _declared() -> list[Requirement]:
    """Every requirement pyproject.toml declares: the dependencies and both extras CI installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["dev"], *extras["notebooks"]]]


def test_lock_pins_every_declared_dependency_inside_its_range():
    lock = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={lock[name]}, outside pyproject.toml's range {req}"
        )


def test_pyproject_states_ranges_not_pins_for_torch():
    """A researcher's own torch build must be installable: the project declares ranges, the lock pins."""
    declared = {canonicalize_name(r.name): r for r in _declared()}
    for name in ("torch", "torchvision"):
        assert not any(s.operator == "==" for s in declared[name].specifier), declared[name]
    assert (_lock()["torch"], _lock()["torchvision"]) == ("2.14.1", "0.29.1")


def test_installed_versions_are_the_locked_ones():
    """CI installs with ``-c constraints.txt``; there every declared package must be at its pin."""
    lock = _lock()
    drift = {}
    for req in _declared():
        name = canonicalize_name(req.name)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != lock[name]:
            drift[req.name] = (installed, lock[name])
    if drift and not os.environ.get("CI"):
        pytest.skip(f"this environment was not installed from constraints.txt (installed, locked): {drift}")
    assert not drift, f"installed versions differ from constraints.txt (installed, locked): {drift}"


def test_environment_yml_installs_the_same_as_readme():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep)
    assert pip_section == ["-c constraints.txt", "-e .[dev,notebooks]"]
    python = next(dep for dep in env["dependencies"] if isinstance(dep, str) and dep.startswith("python="))
    assert python == "python=3.11"
    assert "-c constraints.txt" in _readme_commands()[0]


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README.md needs a ```bash block with the set-up and test commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_exactly_readmes_two_commands():
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci == _readme_commands()
    assert len(ci) == 2 and "pip install -c constraints.txt -e" in ci[0] and "pytest" in ci[1]
