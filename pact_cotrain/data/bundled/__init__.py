"""The FTRL and ToolHop public files, shipped xz-compressed with the package (see NOTICE.md here).

    bundled_path("ftrl")     -> .../ftrl_test_public.jsonl      (152 rows)
    bundled_path("toolhop")  -> .../toolhop_subset_public.jsonl (70 rows)

Readers, the sandbox benchmark and `pact tools` all take a plain JSONL path, so a file is
decompressed once into the cache (`$PACT_CACHE`, default ~/.cache/pact-cotrain, under data/) and
checked against its sha256; later calls return the cached copy. The write is atomic, so parallel
processes never see half a file.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import tempfile
from importlib import resources
from pathlib import Path

# name: (file in this package, sha256 of the decompressed JSONL, identical to ../shared/data's)
BUNDLED = {
    "ftrl": ("ftrl_test_public.jsonl", "04501e62944c4d486203e3721428a332a9bc7759e3ff351933f5d3251d78d30d"),
    "toolhop": ("toolhop_subset_public.jsonl", "9235920e56e7dec0232ee3de38cf016abb4037d8bfecc4b4597e5ec170132341"),
}


def _cache_dir() -> Path:
    from pact_cotrain.models import cache_root

    return cache_root() / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundled_path(name: str) -> Path:
    """The decompressed bundled file of benchmark `name` ("ftrl" or "toolhop")."""
    filename, sha = BUNDLED[name]
    target = _cache_dir() / sha[:12] / filename  # the digest in the path: a new release gets a new copy
    if target.is_file():
        return target
    data = lzma.decompress(resources.files(__name__).joinpath(filename + ".xz").read_bytes())
    if hashlib.sha256(data).hexdigest() != sha:
        raise RuntimeError(f"bundled {filename}.xz does not decompress to the expected sha256 {sha}; reinstall")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target)
    return target
