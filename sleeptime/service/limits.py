"""Request-body limits as plain ASGI middleware, applied before any parsing.

A body over ``max_body_bytes`` gets 413, whether it announces its length (Content-Length) or
streams it (chunked). A body not fully arrived within ``timeout_s`` of the request's start gets
408: uvicorn itself has no body read timeout, so without this a client trickling its body (or
sending none after announcing one) would hold the request open for as long as it liked. Both
answers close the connection, since the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from starlette.responses import JSONResponse

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class RequestBodyLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            declared = _content_length(scope)
        except ValueError:
            await JSONResponse({"detail": {"reason": "malformed Content-Length"}}, 400,
                               headers={"connection": "close"})(scope, receive, send)
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except _Disconnected:
            return  # nobody to answer
        except _TooLarge:
            await self._too_large(scope, receive, send)
            return
        except TimeoutError:
            await JSONResponse(
                {"detail": {"reason": f"request body not received within {self.timeout_s:g} seconds",
                            "limit_s": self.timeout_s}},
                408, headers={"connection": "close"},
            )(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse(
            {"detail": {"reason": f"request body larger than {self.max_body_bytes} bytes", "limit_bytes": self.max_body_bytes}},
            413, headers={"connection": "close"},
        )(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, None when not declared; ValueError when not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the client's later messages
    (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
