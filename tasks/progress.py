"""Progress bars for long stages, when a caller (the CLI) installs a reporter.

Prefect runs tasks in threads of the flow's process, so a process-wide reporter reaches them.
"""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
Factory = Callable[[str, int], Advance]

_factory: Factory | None = None


def set_reporter(factory: Factory | None) -> None:
    global _factory
    _factory = factory


def stage(name: str, total: int) -> Advance:
    if _factory is None or total == 0:
        return lambda n: None
    return _factory(name, total)
