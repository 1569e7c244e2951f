"""Local model servers a run needs (e.g. SmolLM2 under llama.cpp), started on first use and
stopped when the run ends. A server already running on the port (``sleeptime models
serve-local``) is used and left running."""

from __future__ import annotations

import logging
import threading

from sleeptime.config import RunConfig
from sleeptime.model.local_server import LocalServer

log = logging.getLogger(__name__)


class LocalModels:
    def __init__(self, config: RunConfig):
        self.config = config
        self.servers: dict[str, LocalServer] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LocalModels:
        return self

    def ensure(self, name: str) -> None:
        spec = self.config.models[name]
        if spec.local_server is None:
            return
        with self._lock:
            if name not in self.servers:
                log_dir = self.config.output_dir / "logs"
                log_dir.mkdir(parents=True, exist_ok=True)
                self.servers[name] = LocalServer(spec.local_server, log_path=log_dir / f"{name}-server.log").start()

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
