"""The service's background loops (the snapshot poller, the query-log flusher): start and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro, name=name)


async def stop(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has unwound (its finally blocks ran)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
