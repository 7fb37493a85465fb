"""Which code and which host a study's runs used: recorded in done.json, required by a study's `host:`
key, and listed in the report.

- `code_version()`: the git commit the package runs from, and whether pact_cotrain/ differs from it.
- `host_info()`: the CPU, whether it has native bf16, the GPU. `auto` precision resolves from these
  (training/precision.py), so runs on different hosts may differ in their arithmetic.
- `check_host(study, config)`: a study's `host:` mapping (e.g. `{native_bf16: true}`) refuses a run on
  another host, in one line.
- `code_version_lines`, `host_lines`: the report's lines, one when every run agrees, else the runs of each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> dict:
    """{"commit": the git commit the package runs from, "dirty": whether its tracked files under
    pact_cotrain/ differ from that commit}; None for both outside a git checkout."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no", "--", "pact_cotrain")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host_info() -> dict:
    """{"cpu": the CPU's model name, "native_bf16": whether it has bf16 instructions, "gpu": the CUDA device's
    name or None}. `auto` precision resolves from these (training/precision.py): bf16 on a native-bf16 CPU,
    fp32 on an AVX2-only one. Runs made on hosts that differ here may differ in their arithmetic, so a
    study's report names each run's host."""
    import platform

    import torch

    from pact_cotrain.training.precision import cpu_has_native_bf16

    path = Path("/proc/cpuinfo")
    cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": names[0] if names else (platform.processor() or None),
            "native_bf16": cpu_has_native_bf16(cpuinfo), "gpu": gpu}


def check_host(study: dict, config: str, host: dict | None = None) -> None:
    """A study's `host:` mapping (e.g. `{native_bf16: true}`) names what every run's host must have, so that
    runs of one study, made in sessions on different machines, share their arithmetic. On another host no
    run starts: a UserError of one line names the study file, the key, and what this host has."""
    required = study.get("host") or {}
    if not required:
        return
    host = host or host_info()
    unknown = sorted(set(required) - set(host))
    wrong = {key: host[key] for key, value in required.items() if key in host and host[key] != value}
    if unknown or wrong:
        from pact_cotrain.errors import UserError

        what = ", ".join([f"{key}: {value!r} (required {required[key]!r})" for key, value in wrong.items()] +
                         [f"{key}: not a host field (cpu, native_bf16, gpu)" for key in unknown])
        raise UserError(f"{config}: `host:` does not match this host ({host.get('cpu')}): {what}; no run started")


def code_version_lines(found: dict[str, list[dict]]) -> list[str]:
    """Which commit each run trained and evaluated with (done.json's `git_at_start` and `git`): one line when
    every run used one version, else the runs of each version, so a mid-study change shows."""
    versions: dict[str, list[str]] = {}
    for arm, runs in found.items():
        for r in runs:
            done = r["done"]
            commits = [((v or {}).get("commit") or "unknown")[:10] for v in (done.get("git_at_start"), done.get("git"))]
            dirty = any((v or {}).get("dirty") for v in (done.get("git_at_start"), done.get("git")))
            key = " then ".join(dict.fromkeys(commits)) + (" (uncommitted changes)" if dirty else "")
            versions.setdefault(key, []).append(f"{arm}:{r['seed']}")
    if not versions:
        return []
    if len(versions) == 1:
        return [f"Code: every run used commit {next(iter(versions))}.", ""]
    return ["**Code: the runs used more than one version** (commit per run; a run listed with two commits was "
            "resumed on the second):", "", *[f"- {key}: {', '.join(runs)}" for key, runs in versions.items()], ""]


def host_lines(found: dict[str, list[dict]]) -> list[str]:
    """On which host each run ran (done.json's `host`, recorded since study v2b): one line when every run that
    recorded one ran on the same, else the runs per host. `auto` precision differs between hosts with and
    without native bf16, so a mixed study says so. Runs from before the record are listed as not recorded."""
    hosts: dict[str, list[str]] = {}
    for arm, runs in found.items():
        for r in runs:
            host = r["done"].get("host")
            key = "not recorded"
            if host:
                key = f"{host.get('cpu') or 'unknown CPU'} (native bf16: {'yes' if host.get('native_bf16') else 'no'})"
                key += f", GPU {host['gpu']}" if host.get("gpu") else ""
            hosts.setdefault(key, []).append(f"{arm}:{r['seed']}")
    if set(hosts) <= {"not recorded"}:  # a study from before the record (v2's report stays as it was)
        return []
    if len(hosts) == 1:
        return [f"Host: every run on {next(iter(hosts))}.", ""]
    return ["**Host: the runs ran on more than one host** (`auto` precision is bf16 only with native bf16):", "",
            *[f"- {key}: {', '.join(runs)}" for key, runs in hosts.items()], ""]
