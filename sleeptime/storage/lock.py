"""One writer per output location: an OS file lock, released by the kernel when the process dies.

``filelock`` (already in the dependency tree through Ray and litellm) takes an ``flock`` on
``<output>/.sleeptime.lock``; a crashed or SIGKILLed holder leaves no stale lock behind. Who
holds it (pid, run id, host, start time) is written beside it, so a second run can say whom it
is waiting for instead of failing obscurely later.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

# The exit status of a run that finds the output location busy (EX_TEMPFAIL: try again later).
EXIT_LOCKED = 75


class OutputLocked(RuntimeError):
    """Another run holds the output location."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = path
        self.holder = holder
        who = ", ".join(f"{k} {holder[k]}" for k in ("pid", "run_id", "host", "started_at") if holder.get(k))
        super().__init__(
            f"{path.parent} is in use by another sleeptime run ({who or 'holder unknown'}); "
            "nothing was done. Rerun later, or pass --wait to queue behind it."
        )


class OutputLock:
    """``with OutputLock(output_dir, run_id): ...`` holds the output location for one run."""

    def __init__(self, output_dir: Path | str, run_id: str = "", *, wait: bool = False, poll_s: float = 1.0):
        self.dir = Path(output_dir)
        self.path = self.dir / ".sleeptime.lock"
        self.info_path = self.dir / ".sleeptime.lock.json"
        self.run_id = run_id
        self.wait = wait
        self.poll_s = poll_s
        self._lock: FileLock | None = None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the flow's tasks run in threads of the process that holds it.
        lock = FileLock(str(self.path), thread_local=False, is_singleton=False)
        if self.wait:
            announced = False
            while True:
                try:
                    lock.acquire(timeout=self.poll_s)
                    break
                except Timeout:
                    if not announced:
                        print(f"waiting for the output lock: {OutputLocked(self.path, self.holder())}", flush=True)
                        announced = True
        else:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise OutputLocked(self.path, self.holder()) from None
        self._lock = lock
        info = {"pid": os.getpid(), "run_id": self.run_id, "host": socket.gethostname(),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "acquired": time.time()}
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(self.info_path)

    def acquire_and_release(self) -> None:
        """Raise ``OutputLocked`` now if another process holds the location (a cheap early check)."""
        self.acquire()
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
