"""The setup scripts install what pyproject.toml declares."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as scripts/setup_vllm_cpu.sh uses

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def test_the_vllm_setup_installs_every_dependency_of_pyproject_but_transformers():
    """.venv-vllm installs pact-cotrain with --no-deps, so its script installs our dependencies itself. A copied
    list missed scipy, and SFT->MatchTIR failed there at its first RL step (ModuleNotFoundError). The script's
    own command must list pyproject's core and test dependencies, less transformers (held at vLLM's version)."""
    script = (ROOT / "scripts" / "setup_vllm_cpu.sh").read_text()
    lines = [line for line in script.splitlines() if "pyproject_requirements.py" in line and not line.startswith("#")]
    assert len(lines) == 1, "setup_vllm_cpu.sh should read its dependency list from pyproject.toml"
    command = shlex.split(lines[0].split(">")[0].replace('"$VPY"', shlex.quote(sys.executable)))
    listed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    assert {_name(r) for r in listed} == {_name(r) for r in declared} - {"transformers"}
    assert "scipy>=1.11,<2" in listed  # versions are pyproject's, not a copy's
