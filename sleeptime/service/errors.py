"""How the service states errors: ``{"detail": {"reason": ...}}`` problems, paths kept out of
what unauthenticated callers see, and 422s that never echo a client's input."""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def problem(status: int, reason: str, **extra: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"reason": reason, **extra})


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\";,\\/:]+){2,}[\\/]?")


def public_message(message: str | None) -> str | None:
    """An error for unauthenticated endpoints: file system paths replaced (the log keeps them)."""
    return _PATH.sub("<path>", message) if message else message


def _printable(value: Any) -> Any:
    """A location or message part that JSON can carry (a lone surrogate escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input: FastAPI's own handler repeats it,
    which fails for NaN or a lone surrogate (a 500, with the body in the traceback) and would put
    a client's question in any log that records responses."""
    detail = [{"loc": [_printable(part) for part in error.get("loc", ())], "msg": _printable(str(error.get("msg", ""))),
               "type": _printable(str(error.get("type", "")))} for error in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)
