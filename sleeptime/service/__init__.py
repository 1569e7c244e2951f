"""The query service: the cheapest adequate (variant, test budget) per query, over HTTP, from the
published warehouse, with API keys per tenant, hot reload, a query log and Prometheus metrics.

Names are imported lazily so that ``sleeptime.service.cli`` (mounted in the main CLI) costs
nothing until a service command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sleeptime.service.app import create_app
    from sleeptime.service.keys import KeyStore
    from sleeptime.service.settings import ServiceSettings

__all__ = ["KeyStore", "ServiceSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sleeptime.service.app import create_app

        return create_app
    if name == "ServiceSettings":
        from sleeptime.service.settings import ServiceSettings

        return ServiceSettings
    if name == "KeyStore":
        from sleeptime.service.keys import KeyStore

        return KeyStore
    raise AttributeError(f"module 'sleeptime.service' has no attribute {name!r}")
