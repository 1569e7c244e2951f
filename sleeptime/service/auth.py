"""Who is calling: the tenant of an API key (``Caller``), and the scrape token of /metrics.

An API key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; FastAPI's security
schemes read both headers and put them in the OpenAPI description.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sleeptime.service.dependencies import Parts, Settings
from sleeptime.service.keys import KeyFileError, Principal

_bearer = HTTPBearer(auto_error=False, description="An API key from `sleeptime keys create TENANT`.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, in this header.")
_metrics_bearer = HTTPBearer(auto_error=False, scheme_name="MetricsToken",
                             description="The scrape token (setting metrics_token), when one is set.")

BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, {"reason": reason}, headers={"WWW-Authenticate": "Bearer"})


def caller(parts: Parts, credentials: BearerCredentials,
           api_key: Annotated[str | None, Depends(_api_key_header)]) -> Principal:
    """The caller's tenant from its API key; 401 without a valid one. With auth off: every tenant."""
    if not parts.settings.auth:
        return Principal(tenant=None)
    bearer = credentials.credentials if credentials is not None else None
    if bearer and api_key and bearer.strip() != api_key.strip():
        # Two different keys: serving either could act for the wrong tenant.
        raise HTTPException(400, {"reason": "conflicting credentials: send one key, in Authorization or in X-API-Key"})
    secret = bearer or api_key
    if not secret:
        raise _unauthorized("missing API key")
    try:
        info = parts.keys.verify(secret)
    except KeyFileError:
        raise HTTPException(503, {"reason": "API keys unavailable: the key file cannot be read"}) from None
    if info is None:
        raise _unauthorized("invalid or revoked API key")
    return Principal(tenant=info.tenant, key_id=info.key_id)


Caller = Annotated[Principal, Depends(caller)]


def metrics_access(settings: Settings,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)]) -> None:
    """/metrics is open unless ``metrics_token`` is set; then it takes that token as a Bearer
    credential (Prometheus: ``authorization: {credentials: ...}`` in the scrape config). A tenant's
    API key does not open it: the series cover every tenant's traffic."""
    token = settings.metrics_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.get_secret_value().encode("utf-8")):
        raise _unauthorized("missing or wrong metrics token")
